"""Rule demo_parts: a generated part-annotated set (PartImageNet layout)."""

from insight.core.io import atomic_dir
from insight.core.logs import setup_logging
from insight.demo.layouts import make_part_dataset

log = setup_logging(snakemake.log[0])
with atomic_dir(snakemake.output[0]) as tmp:
    make_part_dataset(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d part-annotated scenes", snakemake.params.scenes)
