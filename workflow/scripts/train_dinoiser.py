"""Rule train_dinoiser: fit g on frozen CLIP features and DINO affinities (App. B.1)."""

import pyarrow.parquet as pq
import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.data.images import decode_policy
from insight.models.backbone import backbone_identity, backbone_spec
from insight.models.dinoiser import save_dinoiser
from insight.models.dinoiser_training import (
    dinoiser_train_config,
    sample_training_images,
    train_dinoiser_from_images,
)
from insight.models.teachers import teacher_spec

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
dinoiser = settings.dinoiser
index = pq.read_table(snakemake.input.index)
refs = sample_training_images(index, dinoiser.images, dinoiser.seed)
backbone = backbone_spec(settings.backbone)
model, metrics = train_dinoiser_from_images(
    refs,
    backbone,
    teacher_spec(dinoiser.teacher),
    dinoiser_train_config(dinoiser),
    decode_policy(settings.images),
    resolve_device(settings.device),
)
save_dinoiser(model, snakemake.output.weights, backbone_identity(backbone))
write_json({"config": snakemake.params.settings, "metrics": metrics}, snakemake.output.metrics)
log.info("DINOiser trained: %s", metrics)
