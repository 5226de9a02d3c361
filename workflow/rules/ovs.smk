rule ovs:
    """One benchmark: per-class IoU and mIoU of the three methods (absent data: 'not run')."""
    input:
        weights=backbone_weights,
        sae=lambda wc: upstream("sae", wc).sae_weights,
        dinoiser=dinoiser_weights,
        root=ovs_root_input,
        names=lambda wc: (
            [upstream("naming", wc).names] if config["ovs"]["explain_images"] else []
        ),
    output:
        result=OUT.path("ovs/{benchmark}.json"),
        figures=report(
            directory(OUT.path("ovs/{benchmark}")),
            patterns=["explain/{name}.png"],
            caption="../report/ovs_explanations.rst",
            category="Explanations",
            subcategory="segmentation: {benchmark}",
        ),
    log:
        "logs{variant}/ovs/{benchmark}.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=lambda wc: for_dataset(model_settings("ovs")(wc), "ovs", wc.benchmark),
        code=script_version("ovs"),
    script:
        "../scripts/ovs.py"


rule ovs_table:
    """results/ovs_table.csv: one row per method, one column per benchmark (+ markdown)."""
    input:
        lambda wc: expand(
            "results{variant}/ovs/{benchmark}.json",
            variant=wc.variant,
            benchmark=list(config["ovs"]["datasets"]),
        ),
    output:
        csv=report(
            OUT.path("ovs_table.csv"),
            caption="../report/ovs_table.rst",
            category="Benchmarks",
            labels={"table": "open-vocabulary segmentation (mIoU)"},
        ),
        markdown=OUT.path("ovs_table.md"),
    log:
        "logs{variant}/ovs_table.log",
    conda:
        ENV
    params:
        code=script_version("ovs_table"),
    script:
        "../scripts/ovs_table.py"
