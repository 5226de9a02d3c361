"""Rule features_summary: images, patches and rejected images of a dataset."""

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.features.shards import summarise_shards

log = start_job(snakemake)
summary = summarise_shards(snakemake.input.features, snakemake.input.rejected)
write_json(summary, snakemake.output[0])
log.info("%s: %s", snakemake.wildcards.dataset, summary)
if summary["rejected"]:
    log.warning("%d images rejected; see %s", summary["rejected"], "results/features/*/rejected/")
