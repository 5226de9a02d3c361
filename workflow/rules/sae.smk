if not config["sae"]["checkpoint"]:

    rule train_sae:
        """Matryoshka BatchTopK SAE on the training dataset's patch features (App. B.2)."""
        input:
            features=lambda wc: feature_shards(
                config["train_dataset"], upstream("features", wc)
            ),
        output:
            weights=OUT.sae_weights,
            metrics=OUT.sae_report,
        log:
            "logs{variant}/train_sae.log",
        conda:
            ENV
        threads: 2
        resources:
            gpu=config["resources"]["gpus"],
            mem_mb=config["resources"]["mem_mb_train_sae"],
            runtime=24 * 60,
        params:
            settings=settings_of("sae"),
            code=script_version("train_sae"),
        script:
            "../scripts/train_sae.py"

else:

    rule import_sae:
        """A released dictionary_learning SAE in place of training, evaluated on held-out images."""
        input:
            folder=config["sae"]["checkpoint"],
            features=lambda wc: feature_shards(
                config["train_dataset"], upstream("features", wc)
            ),
        output:
            weights=OUT.sae_weights,
            metrics=OUT.sae_report,
        log:
            "logs{variant}/import_sae.log",
        conda:
            ENV
        threads: 2
        resources:
            gpu=config["resources"]["gpus"],
            runtime=60,
        params:
            settings=settings_of("sae"),
            code=script_version("import_sae"),
        script:
            "../scripts/import_sae.py"


rule encode_concepts:
    """Sparse concept activations of one feature shard (thresholded SAE codes)."""
    input:
        features=lambda wc: feature_shard(
            wc.dataset, wc.shard, upstream("features", wc)
        ),
        sae=lambda wc: upstream("sae", wc).sae_weights,
    output:
        OUT.path("concepts/{dataset}/shard-{shard}.parquet"),
    log:
        "logs{variant}/encode_concepts/{dataset}/shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{5}",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
        runtime=60,
    params:
        code=script_version("encode_concepts"),
    script:
        "../scripts/encode_concepts.py"


rule concepts_summary:
    """Activations, mean L0 and concepts that fire over a dataset's concept shards."""
    input:
        concepts=lambda wc: concept_shards(wc.dataset, upstream("concepts", wc)),
        features=lambda wc: feature_shards(wc.dataset, upstream("features", wc)),
        sae=lambda wc: upstream("sae", wc).sae_report,
    output:
        OUT.path("concepts/{dataset}/summary.json"),
    log:
        "logs{variant}/concepts_summary/{dataset}.log",
    conda:
        ENV
    params:
        code=script_version("concepts_summary"),
    script:
        "../scripts/concepts_summary.py"
