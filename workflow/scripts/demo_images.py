"""Rule demo_images: write the offline demo's generated scenes."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_scene_images, write_bad_images

log = start_job(snakemake)
with atomic_dir(snakemake.output[0]) as tmp:
    paths = make_scene_images(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
    bad = write_bad_images(tmp) if snakemake.params.bad_images else []
log.info("wrote %d scenes and %d bad files", len(paths), len(bad))
