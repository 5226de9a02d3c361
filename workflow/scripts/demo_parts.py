"""Rule demo_parts: a generated part-annotated set (PartImageNet layout)."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_part_dataset

log = start_job(snakemake)
with atomic_dir(snakemake.output[0]) as tmp:
    make_part_dataset(tmp, snakemake.params.scenes, seed=snakemake.params.seed)
log.info("wrote %d part-annotated scenes", snakemake.params.scenes)
