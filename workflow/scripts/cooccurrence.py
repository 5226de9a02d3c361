"""Rule cooccurrence: sum the partials, write D's entries above the floor and the totals."""

from insight.core.io import read_json, write_parquet
from insight.core.provenance import start_job
from insight.hierarchy.cooccurrence import cooccurrence_table, reduce_partials, totals_table

log = start_job(snakemake)
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
partial = reduce_partials(snakemake.input.partials, d_sae)
table = cooccurrence_table(partial, snakemake.params.floor)
write_parquet(table, snakemake.output.cooccurrence)
write_parquet(totals_table(partial), snakemake.output.totals)
log.info(
    "%d patches, %d entries of D >= %s", partial.patches, table.num_rows, snakemake.params.floor
)
