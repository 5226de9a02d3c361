"""Rule training_curves: the SAE's and the CLIP's training histories, as a table and a figure."""

from insight.core.io import write_parquet
from insight.core.provenance import start_job
from insight.views.curves import curves_png, training_history

log = start_job(snakemake)
history = training_history(
    snakemake.input.sae[0] if snakemake.input.sae else None,
    snakemake.input.clip[0] if snakemake.input.clip else None,
)
write_parquet(history, snakemake.output.table)
curves_png(history, snakemake.output.figure)
log.info("%d history rows", history.num_rows)
