"""Rule demo_clip_pairs: world scenes and close-ups with captions (CLIP training pairs)."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_clip_pairs

log = start_job(snakemake)
with atomic_dir(snakemake.output[0]) as tmp:
    make_clip_pairs(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d scenes and %d close-ups", snakemake.params.scenes, snakemake.params.scenes)
