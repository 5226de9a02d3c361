"""Rule import_sae: a dictionary_learning SAE folder as our weights and sae.json."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.sae.model import save_sae
from insight.sae.training import import_sae

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
sae, report = import_sae(
    snakemake.input.folder,
    snakemake.input.features,
    settings.sae,
    resolve_device(settings.device),
)
save_sae(sae, snakemake.output.weights)
write_json(report, snakemake.output.metrics)
log.info("imported %s; held-out metrics: %s", snakemake.input.folder, report["metrics"]["heldout"])
