"""Rule train_clip: contrastive training of the backbone on image/caption pairs."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.demo.clip_training import train_clip_from_pairs
from insight.models.backbone import backbone_spec

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
metrics = train_clip_from_pairs(
    snakemake.params.training["pairs"],
    backbone_spec({**snakemake.params.backbone, "checkpoint": None, "pretrained": None}),
    snakemake.params.training,
    snakemake.output.weights,
    resolve_device(snakemake.params.device),
)
write_json(metrics, snakemake.output.metrics)
