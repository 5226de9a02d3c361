"""Rule train_sae: train the SAE, write weights (safetensors) and sae.json."""

import torch

from insight.io import write_json
from insight.logs import setup_logging
from insight.pipeline import train_sae_from_shards
from insight.runtime import resolve_device
from insight.sae import save_sae

log = setup_logging(snakemake.log[0])
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
