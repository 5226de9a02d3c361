"""Rule train_clip: contrastive training of the backbone on image/caption pairs."""

import torch

from insight.io import write_json
from insight.logs import setup_logging
from insight.pipeline import backbone_spec, train_clip_from_pairs
from insight.runtime import resolve_device

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
metrics = train_clip_from_pairs(
    snakemake.params.training["pairs"],
    backbone_spec({**snakemake.params.backbone, "checkpoint": None, "pretrained": None}),
    snakemake.params.training,
    snakemake.output.weights,
    resolve_device(snakemake.params.device),
)
write_json(metrics, snakemake.output.metrics)
