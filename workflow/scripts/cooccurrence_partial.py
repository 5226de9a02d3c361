"""Rule cooccurrence_partial: partial numerators and totals of D over some concept shards."""

from insight.core.io import read_json
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.hierarchy.cooccurrence import concept_blocks
from insight.hierarchy.streaming import shards_partial

log = start_job(snakemake)
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
blocks = job_settings(snakemake).hierarchy.concept_blocks
rows = concept_blocks(d_sae, blocks)[int(snakemake.wildcards.block)]
partial = shards_partial(
    snakemake.input.concepts, d_sae, snakemake.params.min_activation, rows=rows
)
partial.save(snakemake.output[0])
log.info(
    "%d shards, %d patches with concepts, concepts %d..%d",
    len(snakemake.input.concepts),
    partial.patches,
    *rows,
)
