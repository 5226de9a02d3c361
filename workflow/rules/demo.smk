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
        code=code_version("insight.demo"),
    script:
        "../scripts/demo_images.py"
