checkpoint index_images:
    """List a dataset's images and cut them into shards (Sec. 3.1)."""
    input:
        dataset_source,
    output:
        index="results/images/{dataset}/index.parquet",
        summary="results/images/{dataset}/index.json",
    log:
        "logs/index_images/{dataset}.log",
    conda:
        ENV
    params:
        kind=lambda wc: dataset_config(wc.dataset)["kind"],
        per_shard=config["images"]["per_shard"],
        code=script_version("index_images"),
    script:
        "../scripts/index_images.py"


rule train_dinoiser:
    """Train the 3x3 conv g against binarised DINO affinities (Eq. 2, B.2)."""
    input:
        weights=backbone_weights,
        index=lambda wc: f"results/images/{dinoiser_dataset()}/index.parquet",
    output:
        weights=OUT.dinoiser_weights,
        metrics=OUT.path("models/dinoiser.json"),
    log:
        "logs{variant}/train_dinoiser.log",
    conda:
        ENV
    threads: config["features"]["threads"]
    resources:
        gpu=config["resources"]["gpus"],
        runtime=240,
    params:
        settings=settings_of("backbone", "images", *DINOISER_TRAINING_KEYS),
        code=script_version("train_dinoiser"),
    script:
        "../scripts/train_dinoiser.py"


rule extract_features:
    """DINOised MaskCLIP patch features of one shard of images (Eq. 1)."""
    input:
        weights=backbone_weights,
        index="results/images/{dataset}/index.parquet",
        dinoiser=dinoiser_weights,
    output:
        features=OUT.path("features/{dataset}/shard-{shard}.parquet"),
        rejected=OUT.path("features/{dataset}/rejected/shard-{shard}.parquet"),
    log:
        "logs{variant}/extract_features/{dataset}/shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{5}",
    conda:
        ENV
    threads: config["features"]["threads"]
    resources:
        gpu=config["resources"]["gpus"],
        runtime=120,
    params:
        settings=model_settings("images", "features"),
        code=script_version("extract_features"),
    script:
        "../scripts/extract_features.py"


rule features_summary:
    """Counts of images, patches and rejected images over a dataset's shards."""
    input:
        features=lambda wc: feature_shards(wc.dataset),
        rejected=lambda wc: rejected_tables(wc.dataset),
    output:
        "results/features/{dataset}/summary.json",
    log:
        "logs/features_summary/{dataset}.log",
    conda:
        ENV
    params:
        code=script_version("features_summary"),
    script:
        "../scripts/features_summary.py"
