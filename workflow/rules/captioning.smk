rule caption_tokens:
    """Pooled 8x8 tokens of every Karpathy split: backbone and SAE reconstruction (B.6)."""
    input:
        weights=backbone_weights,
        sae=RUN.sae_weights,
        dinoiser=dinoiser_weights,
        data=captioning_data,
    output:
        tokens="results/captioning/tokens.safetensors",
        captions="results/captioning/captions.json",
    log:
        "logs/caption_tokens.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=captioner_settings(*MODEL_BUNDLE_KEYS),
        code=script_version("caption_tokens"),
    script:
        "../scripts/caption_tokens.py"


rule train_captioner:
    """Adapter + GPT-2 on one kind of tokens (insight or the opaque clip baseline)."""
    input:
        tokens="results/captioning/tokens.safetensors",
        captions="results/captioning/captions.json",
        data=captioning_data,
    output:
        result="results/captioning/{method}.json",
        model=directory("results/models/captioner/{method}"),
    log:
        "logs/train_captioner/{method}.log",
    wildcard_constraints:
        method="insight|clip",
    conda:
        ENV
    threads: config["captioning"]["threads"]
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=captioner_settings(),
        code=script_version("train_captioner"),
    script:
        "../scripts/train_captioner.py"


rule caption_steering:
    """Zero the concepts named for each target word; how the test captions change (Fig. 6)."""
    input:
        weights=backbone_weights,
        sae=RUN.sae_weights,
        dinoiser=dinoiser_weights,
        names=RUN.names,
        families=RUN.families,
        captioner=RUN.captioner,
        data=captioning_data,
    output:
        "results/captioning/steering.json",
    log:
        "logs/caption_steering.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=model_settings("captioning"),
        code=script_version("caption_steering"),
    script:
        "../scripts/caption_steering.py"


rule captioning_table:
    """results/captioning_table.csv: BLEU-4, CIDEr, METEOR per method (Fig. 6 top)."""
    input:
        expand("results/captioning/{method}.json", method=["insight", "clip"]),
    output:
        report(
            "results/captioning_table.csv",
            caption="../report/captioning_table.rst",
            category="Benchmarks",
            labels={"table": "captioning (App. B.6)"},
        ),
    log:
        "logs/captioning_table.log",
    conda:
        ENV
    params:
        code=script_version("captioning_table"),
    script:
        "../scripts/captioning_table.py"
