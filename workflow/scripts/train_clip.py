"""Rule train_clip: contrastive training of the backbone on image/caption pairs."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.demo.clip_training import train_clip_from_pairs
from insight.models.backbone import BackboneSpec

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
metrics = train_clip_from_pairs(
    settings.clip_training.pairs,
    BackboneSpec(settings.backbone.model, pretrained=None, checkpoint=None),
    settings.clip_training,
    snakemake.output.weights,
    resolve_device(settings.device),
)
write_json(metrics, snakemake.output.metrics)
