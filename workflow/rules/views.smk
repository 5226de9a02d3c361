rule browser:
    """The static concept browser: index, one page per concept, heatmap thumbnails."""
    input:
        weights=backbone_weights,
        names=RUN.names,
        families=RUN.families,
        totals=RUN.totals,
        concepts=lambda wc: concept_shards(browser_dataset()),
        index=browser_image_index,
    output:
        report(
            directory("results/browser"),
            htmlindex="index.html",
            category="Concept browser",
            caption="../report/browser.rst",
        ),
    log:
        "logs/browser.log",
    conda:
        ENV
    params:
        settings=settings_of("backbone", "browser", "hierarchy.dense_coverage"),
        code=script_version("browser"),
    script:
        "../scripts/browser.py"


rule training_curves:
    """The SAE's per-step training history and the CLIP's loss per epoch, plotted."""
    input:
        sae=lambda wc: ([] if config["sae"]["checkpoint"] else [RUN.sae_report]),
        clip=lambda wc: (
            ["results/models/clip_training.json"]
            if config["clip_training"]["pairs"]
            else []
        ),
    output:
        table="results/report/training_history.parquet",
        figure=report(
            "results/report/training_curves.png",
            category="Training",
            caption="../report/training_curves.rst",
        ),
    log:
        "logs/training_curves.log",
    conda:
        ENV
    params:
        code=script_version("training_curves"),
    script:
        "../scripts/training_curves.py"
