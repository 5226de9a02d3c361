"""Rule train_sae: train the SAE, write weights (safetensors) and sae.json."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.core.variants import job_layout
from insight.sae.model import save_sae
from insight.sae.training import train_sae_from_shards

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
sae, report = train_sae_from_shards(
    snakemake.input.features,
    settings.sae,
    resolve_device(settings.device),
    job_layout(snakemake).sae_checkpoints,
)
save_sae(sae, snakemake.output.weights)
write_json(report, snakemake.output.metrics)
log.info("held-out metrics: %s", report["metrics"]["heldout"])
