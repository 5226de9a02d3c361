rule ovs:
    """One benchmark: per-class IoU and mIoU of the three methods (absent data: 'not run')."""
    input:
        weights=backbone_weights,
        sae=RUN.sae_weights,
        dinoiser=dinoiser_weights,
        root=ovs_root_input,
        names=lambda wc: ([RUN.names] if config["ovs"]["explain_images"] else []),
    output:
        result="results/ovs/{benchmark}.json",
        figures=report(
            directory("results/ovs/{benchmark}"),
            patterns=["explain/{name}.png"],
            caption="../report/ovs_explanations.rst",
            category="Explanations",
            subcategory="segmentation: {benchmark}",
        ),
    log:
        "logs/ovs/{benchmark}.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=lambda wc: for_dataset(model_settings("ovs"), "ovs", wc.benchmark),
        code=script_version("ovs"),
    script:
        "../scripts/ovs.py"


rule ovs_table:
    """results/ovs_table.csv: one row per method, one column per benchmark (+ markdown)."""
    input:
        expand(
            "results/ovs/{benchmark}.json", benchmark=list(config["ovs"]["datasets"])
        ),
    output:
        csv=report(
            "results/ovs_table.csv",
            caption="../report/ovs_table.rst",
            category="Benchmarks",
            labels={"table": "open-vocabulary segmentation (mIoU)"},
        ),
        markdown="results/ovs_table.md",
    log:
        "logs/ovs_table.log",
    conda:
        ENV
    params:
        code=script_version("ovs_table"),
    script:
        "../scripts/ovs_table.py"
