"""Rule demo_parts: a generated part-annotated set (PartImageNet layout)."""

from insight.demo import make_part_dataset
from insight.io import atomic_dir
from insight.logs import setup_logging

log = setup_logging(snakemake.log[0])
with atomic_dir(snakemake.output[0]) as tmp:
    make_part_dataset(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d part-annotated scenes", snakemake.params.scenes)
