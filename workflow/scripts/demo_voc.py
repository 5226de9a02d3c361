"""Rule demo_voc: a generated segmentation set in the VOC2012 layout."""

from insight.demo import make_voc_dataset
from insight.io import atomic_dir
from insight.logs import setup_logging

log = setup_logging(snakemake.log[0])
with atomic_dir(snakemake.output[0]) as tmp:
    make_voc_dataset(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d scenes in the VOC layout", snakemake.params.scenes)
