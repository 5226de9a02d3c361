"""Rule name_concepts: names, scores and runner-ups of every concept."""

import torch

from insight.core.io import write_parquet
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.naming.names import name_concepts

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
table = name_concepts(
    snakemake.input.sae,
    snakemake.input.families,
    snakemake.input.totals,
    snakemake.input.concepts,
    snakemake.input.embeddings,
    snakemake.input.index,
    settings.naming,
    snakemake.input.cooccurrence,
    settings.hierarchy.threshold,
    snakemake.input.imported[0] if snakemake.input.imported else None,
)
write_parquet(table, snakemake.output[0])
named = table.filter(table["name"].is_valid())
log.info(
    "named %d of %d concepts (method %s)",
    named.num_rows,
    table.num_rows,
    settings.naming.method,
)
