rule classification:
    """Probes on INSIGHT concepts and on CLIP, and zero-shot CLIP, for one dataset (App. B.5)."""
    input:
        weights=backbone_weights,
        sae=lambda wc: upstream("sae", wc).sae_weights,
        dinoiser=dinoiser_weights,
        root=classification_root,
        names=lambda wc: upstream("naming", wc).names,
    output:
        result=OUT.path("classification/{cdataset}.json"),
        train=OUT.path("classification/{cdataset}/train.parquet"),
        test=OUT.path("classification/{cdataset}/test.parquet"),
        figures=report(
            directory(OUT.path("classification/{cdataset}/explanations")),
            patterns=["{name}.png"],
            caption="../report/classification_explanations.rst",
            category="Explanations",
            subcategory="classification: {cdataset}",
        ),
    log:
        "logs{variant}/classification/{cdataset}.log",
    wildcard_constraints:
        cdataset=r"[^/]+",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=lambda wc: for_dataset(
            model_settings("classification")(wc), "classification", wc.cdataset
        ),
        code=script_version("classification"),
    script:
        "../scripts/classification.py"


rule classification_table:
    """results/classification_table.csv: method, dataset, top-1, top-5, non-zero weights."""
    input:
        lambda wc: expand(
            "results{variant}/classification/{cdataset}.json",
            variant=wc.variant,
            cdataset=list(config["classification"]["datasets"]),
        ),
    output:
        report(
            OUT.path("classification_table.csv"),
            caption="../report/classification_table.rst",
            category="Benchmarks",
            labels={"table": "classification (App. B.5)"},
        ),
    log:
        "logs{variant}/classification_table.log",
    conda:
        ENV
    params:
        code=script_version("classification_table"),
    script:
        "../scripts/classification_table.py"
