if config["clip_training"]["pairs"]:

    rule train_clip:
        """Train backbone.model contrastively from scratch on image/caption pairs (the demo)."""
        input:
            clip_pairs,
        output:
            weights=config["backbone"]["checkpoint"],
            metrics="results/models/clip_training.json",
        log:
            "logs/train_clip.log",
        conda:
            ENV
        threads: 2
        resources:
            gpu=config["resources"]["gpus"],
        params:
            settings=settings_of("clip_training", "backbone.model"),
            code=script_version("train_clip"),
        script:
            "../scripts/train_clip.py"
