"""Rule cooccurrence_partial: partial numerators and totals of D over some concept shards."""

from insight.core.io import read_json
from insight.core.logs import setup_logging
from insight.hierarchy.cooccurrence import shards_partial

log = setup_logging(snakemake.log[0])
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
partial = shards_partial(snakemake.input.concepts, d_sae, snakemake.params.min_activation)
partial.save(snakemake.output[0])
log.info("%d shards, %d patches with concepts", len(snakemake.input.concepts), partial.patches)
