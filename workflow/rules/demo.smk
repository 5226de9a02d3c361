rule demo_images:
    """Generate the offline demo's scenes as real image files (plus one bad file of each kind)."""
    output:
        directory(DEMO_IMAGES),
    log:
        "logs/demo_images.log",
    conda:
        ENV
    params:
        scenes=config["demo"]["images"],
        bad_images=config["demo"]["bad_images"],
        seed=config["demo"]["seed"],
        code=script_version("demo_images"),
    script:
        "../scripts/demo_images.py"


rule demo_voc:
    """Generate a small segmentation set in the VOC2012 layout for the offline OVS table."""
    output:
        directory(DEMO_VOC),
    log:
        "logs/demo_voc.log",
    conda:
        ENV
    params:
        scenes=config["demo"]["voc_images"],
        seed=config["demo"]["seed"] + 1,
        code=script_version("demo_voc"),
    script:
        "../scripts/demo_voc.py"


rule demo_parts:
    """Generate a small part-annotated set in the PartImageNet layout."""
    output:
        directory(DEMO_PARTS),
    log:
        "logs/demo_parts.log",
    conda:
        ENV
    params:
        scenes=config["demo"]["part_images"],
        seed=config["demo"]["seed"] + 2,
        code=script_version("demo_parts"),
    script:
        "../scripts/demo_parts.py"


rule demo_imagefolder:
    """Generate a small ImageFolder classification set (class = the shape drawn)."""
    output:
        directory(DEMO_IMAGEFOLDER),
    log:
        "logs/demo_imagefolder.log",
    conda:
        ENV
    params:
        per_class=config["demo"]["classification_images"],
        seed=config["demo"]["seed"] + 3,
        code=script_version("demo_imagefolder"),
    script:
        "../scripts/demo_imagefolder.py"


rule demo_captions:
    """Generate captioned scenes in the COCO Karpathy layout and a tiny random GPT-2."""
    output:
        directory(DEMO_CAPTIONS),
    log:
        "logs/demo_captions.log",
    conda:
        ENV
    params:
        counts=config["demo"]["caption_images"],
        language_model=config["demo"]["language_model"],
        seed=config["demo"]["seed"] + 5,
        code=script_version("demo_captions"),
    script:
        "../scripts/demo_captions.py"


rule demo_clip_pairs:
    """Generate world scenes and close-ups with captions to train the demo's CLIP on."""
    output:
        directory(DEMO_CLIP_PAIRS),
    log:
        "logs/demo_clip_pairs.log",
    conda:
        ENV
    params:
        scenes=config["demo"]["clip_scenes"],
        seed=config["demo"]["seed"] + 6,
        code=script_version("demo_clip_pairs"),
    script:
        "../scripts/demo_clip_pairs.py"


rule world_recovery:
    """What the demo's concepts recovered of the world: world-word names, planted families."""
    input:
        weights=backbone_weights,
        parts=DEMO_PARTS,
        sae=lambda wc: upstream("sae", wc).sae_weights,
        dinoiser=dinoiser_weights,
        families=lambda wc: upstream("hierarchy", wc).families,
        names=lambda wc: upstream("naming", wc).names,
        cooccurrence=lambda wc: upstream("hierarchy", wc).cooccurrence,
        totals=lambda wc: upstream("hierarchy", wc).totals,
    output:
        OUT.world_recovery,
    log:
        "logs{variant}/world_recovery.log",
    conda:
        ENV
    threads: 2
    params:
        settings=model_settings(
            "hierarchy.criterion",
            "hierarchy.threshold",
            "hierarchy.lift",
            "hierarchy.z",
        ),
        code=script_version("world_recovery"),
    script:
        "../scripts/world_recovery.py"


rule naming_methods:
    """The demo's concepts named by Eq. 6, B.9 and the release's vector, side by side."""
    input:
        names=RUN.names,
        sae=RUN.sae_weights,
        families=RUN.families,
        cooccurrence=RUN.cooccurrence,
        totals=RUN.totals,
        concepts=lambda wc: concept_shards(hierarchy_dataset()),
        embeddings=RUN.embeddings,
        index=RUN.vocabulary_index,
    output:
        "results/demo/naming_methods.json",
    log:
        "logs/naming_methods.log",
    conda:
        ENV
    threads: 2
    params:
        settings=settings_of("naming", "hierarchy.threshold"),
        code=script_version("naming_methods"),
    script:
        "../scripts/naming_methods.py"
