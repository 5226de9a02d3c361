"""Rule demo_imagefolder: a generated ImageFolder classification set."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_imagefolder

log = start_job(snakemake)
per_class = snakemake.params.per_class
with atomic_dir(snakemake.output[0]) as tmp:
    make_imagefolder(
        tmp, {"train": per_class, "val": max(1, per_class // 2)}, seed=snakemake.params.seed
    )
log.info("wrote %d training images per class", per_class)
