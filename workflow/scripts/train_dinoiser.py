"""Rule train_dinoiser: fit g on frozen CLIP features and DINO affinities (App. B.1)."""

import pyarrow.parquet as pq
import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.data.images import decode_policy
from insight.models.backbone import backbone_spec
from insight.models.dinoiser import save_dinoiser
from insight.models.dinoiser_training import (
    dinoiser_train_config,
    sample_training_images,
    teacher_spec,
    train_dinoiser_from_images,
)

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.dinoiser
refs = sample_training_images(pq.read_table(snakemake.input.index), cfg["images"], cfg["seed"])
model, metrics = train_dinoiser_from_images(
    refs,
    backbone_spec(snakemake.params.backbone),
    teacher_spec(cfg["teacher"]),
    dinoiser_train_config(cfg),
    decode_policy(snakemake.params.images),
    resolve_device(snakemake.params.device),
)
save_dinoiser(model, snakemake.output.weights)
write_json({"config": cfg, "metrics": metrics}, snakemake.output.metrics)
log.info("DINOiser trained: %s", metrics)
