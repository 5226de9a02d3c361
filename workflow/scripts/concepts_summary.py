"""Rule concepts_summary: how the concepts fire over a dataset."""

from insight.core.io import read_json, write_json
from insight.core.provenance import start_job
from insight.sae.encode import summarise_concept_shards

log = start_job(snakemake)
d_sae = read_json(snakemake.input.sae)["config"]["d_sae"]
summary = summarise_concept_shards(snakemake.input.concepts, snakemake.input.features, d_sae)
write_json(summary, snakemake.output[0])
log.info("%s: %s", snakemake.wildcards.dataset, summary)
