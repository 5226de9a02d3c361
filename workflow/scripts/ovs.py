"""Rule ovs: evaluate one benchmark; an absent dataset is recorded as not run."""

from pathlib import Path

import torch

from insight.core.io import write_json
from insight.core.layout import RUN
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.data.images import DatasetLayoutError
from insight.models.frozen import model_bundle
from insight.tasks.ovs import evaluate_ovs

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
name = snakemake.wildcards.benchmark
try:
    result = evaluate_ovs(
        name,
        settings.ovs.datasets[name],
        model_bundle(settings, snakemake.input.dinoiser),
        snakemake.input.sae,
        settings.ovs,
        RUN.text_cache,
        resolve_device(settings.device),
        out_dir=snakemake.output.figures,
        names_path=snakemake.input.names[0] if snakemake.input.names else None,
    )
except DatasetLayoutError as err:
    log.warning("%s not run: %s", name, err)
    result = {"dataset": name, "status": "not run", "reason": str(err)}
    Path(snakemake.output.figures).mkdir(parents=True, exist_ok=True)
write_json(result, snakemake.output.result)
