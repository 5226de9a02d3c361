rule classification:
    """Probes on INSIGHT concepts and on CLIP, and zero-shot CLIP, for one dataset (App. B.5)."""
    input:
        weights=backbone_weights,
        sae=RUN.sae_weights,
        dinoiser=dinoiser_weights,
        root=classification_root,
        names=RUN.names,
    output:
        result="results/classification/{cdataset}.json",
        train="results/classification/{cdataset}/train.parquet",
        test="results/classification/{cdataset}/test.parquet",
        figures=report(
            directory("results/classification/{cdataset}/explanations"),
            patterns=["{name}.png"],
            caption="../report/classification_explanations.rst",
            category="Explanations",
            subcategory="classification: {cdataset}",
        ),
    log:
        "logs/classification/{cdataset}.log",
    wildcard_constraints:
        cdataset=r"[^/]+",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=lambda wc: for_dataset(
            model_settings("classification"), "classification", wc.cdataset
        ),
        code=script_version("classification"),
    script:
        "../scripts/classification.py"


rule classification_table:
    """results/classification_table.csv: method, dataset, top-1, top-5, non-zero weights."""
    input:
        expand(
            "results/classification/{cdataset}.json",
            cdataset=list(config["classification"]["datasets"]),
        ),
    output:
        report(
            "results/classification_table.csv",
            caption="../report/classification_table.rst",
            category="Benchmarks",
            labels={"table": "classification (App. B.5)"},
        ),
    log:
        "logs/classification_table.log",
    conda:
        ENV
    params:
        code=script_version("classification_table"),
    script:
        "../scripts/classification_table.py"
