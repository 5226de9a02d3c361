"""Rule demo_voc: a generated segmentation set in the VOC2012 layout."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_voc_dataset

log = start_job(snakemake)
with atomic_dir(snakemake.output[0]) as tmp:
    make_voc_dataset(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d scenes in the VOC layout", snakemake.params.scenes)
