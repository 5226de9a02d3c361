"""Rule ovs: evaluate one benchmark; an absent dataset is recorded as not run."""

from pathlib import Path

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.data.images import DatasetLayoutError
from insight.models.frozen import frozen_spec
from insight.tasks.ovs import evaluate_ovs

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
name = snakemake.wildcards.benchmark
try:
    result = evaluate_ovs(
        name,
        snakemake.params.root,
        frozen_spec(
            snakemake.params.backbone,
            snakemake.input.dinoiser,
            snakemake.params.gamma,
            snakemake.params.precision,
        ),
        snakemake.input.sae,
        snakemake.params.ovs,
        snakemake.params.cache,
        resolve_device(snakemake.params.device),
        out_dir=snakemake.output.figures,
        names_path=snakemake.input.names[0] if snakemake.input.names else None,
    )
except DatasetLayoutError as err:
    log.warning("%s not run: %s", name, err)
    result = {"dataset": name, "status": "not run", "reason": str(err)}
    Path(snakemake.output.figures).mkdir(parents=True, exist_ok=True)
write_json(result, snakemake.output.result)
