"""Rule cooccurrence_partial: partial numerators and totals of D over some concept shards."""

from insight.core.io import read_json
from insight.core.provenance import start_job
from insight.hierarchy.streaming import shards_partial

log = start_job(snakemake)
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
partial = shards_partial(snakemake.input.concepts, d_sae, snakemake.params.min_activation)
partial.save(snakemake.output[0])
log.info("%d shards, %d patches with concepts", len(snakemake.input.concepts), partial.patches)
