"""Rule cooccurrence: sum the partials, write D's entries above the floor and the totals."""

from insight.core.io import read_json, write_parquet
from insight.core.provenance import start_job
from insight.hierarchy.cooccurrence import reduce_blocks

log = start_job(snakemake)
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
table, totals = reduce_blocks(snakemake.input.partials, d_sae, snakemake.params.floor)
write_parquet(table, snakemake.output.cooccurrence)
write_parquet(totals, snakemake.output.totals)
log.info(
    "%d partials, %d entries of D >= %s",
    len(snakemake.input.partials),
    table.num_rows,
    snakemake.params.floor,
)
