"""Rule train_sae: train the SAE, write weights (safetensors) and sae.json."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.sae.model import save_sae
from insight.sae.training import train_sae_from_shards

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
sae, report = train_sae_from_shards(
    snakemake.input.features,
    snakemake.params.sae,
    resolve_device(snakemake.params.device),
    snakemake.params.checkpoints,
)
save_sae(sae, snakemake.output.weights)
write_json(report, snakemake.output.metrics)
log.info("held-out metrics: %s", report["metrics"]["heldout"])
