"""Rule encode_concepts: one feature shard -> its sparse concept activations."""

import torch

from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.sae.encode import encode_concept_shard

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
stats = encode_concept_shard(
    snakemake.input.sae,
    snakemake.input.features,
    snakemake.output[0],
    settings.sae.encode_chunk,
    resolve_device(settings.device),
)
log.info("%s: %s", snakemake.output[0], stats)
