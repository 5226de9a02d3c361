rule interpretability:
    """Locality, Consistency, Impurity (App. A.1): INSIGHT and the global-broadcast baseline."""
    input:
        weights=backbone_weights,
        sae=lambda wc: upstream("sae", wc).sae_weights,
        dinoiser=dinoiser_weights,
        roots=interpretability_roots,
    output:
        report(
            OUT.path("interpretability_table.csv"),
            caption="../report/interpretability_table.rst",
            category="Benchmarks",
            labels={"table": "interpretability (App. A.1)"},
        ),
    log:
        "logs{variant}/interpretability.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=model_settings("interpretability"),
        code=script_version("interpretability"),
    script:
        "../scripts/interpretability.py"
