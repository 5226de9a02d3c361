"""Rule demo_captions: captioned scenes (Karpathy layout) and a tiny random GPT-2."""

from insight.core.io import atomic_dir
from insight.core.provenance import start_job
from insight.demo.layouts import make_caption_dataset

log = start_job(snakemake)
with atomic_dir(snakemake.output[0]) as tmp:
    make_caption_dataset(
        tmp,
        snakemake.params.counts,
        seed=snakemake.params.seed,
        language_model=snakemake.params.language_model,
    )
log.info("wrote captioned scenes %s and a random GPT-2", snakemake.params.counts)
