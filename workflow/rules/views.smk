rule browser:
    """The static concept browser: index, one page per concept, heatmap thumbnails."""
    input:
        weights=backbone_weights,
        names="results/naming/names.parquet",
        families="results/hierarchy/families.parquet",
        concepts=lambda wc: concept_shards(browser_dataset()),
        index=browser_image_index,
    output:
        directory("results/browser"),
    log:
        "logs/browser.log",
    conda:
        ENV
    params:
        cfg=config["browser"],
        backbone=config["backbone"],
        cache="results/cache/thumbnails",
        code=script_version("browser"),
    script:
        "../scripts/browser.py"
