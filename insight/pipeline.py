"""Stage entry points that the workflow scripts call: config dicts in, files out.

Each function turns the validated config sections (see
``workflow/schemas/config.schema.yaml``) into the library's typed objects and runs one
stage, so the scripts under ``workflow/scripts`` only wire Snakemake to these calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import torch

from insight.backbone import BackboneSpec, load_clip, maskclip_features
from insight.dinoiser import (
    DINOiser,
    DinoiserTrainConfig,
    TeacherSpec,
    binarise,
    load_dinoiser,
    load_teacher,
    teacher_affinity,
    train_dinoiser,
)
from insight.features import DenseEncoder, ExtractConfig, ShardStats, decoded_batches, extract_shard
from insight.images import DecodePolicy, ImageRef, refs_of_shard
from insight.logs import progress

log = logging.getLogger(__name__)


def backbone_spec(cfg: dict) -> BackboneSpec:
    return BackboneSpec(
        model=cfg["model"],
        pretrained=cfg.get("pretrained"),
        checkpoint=cfg.get("checkpoint"),
        cache_dir=cfg.get("cache_dir"),
    )


def teacher_spec(cfg: dict) -> TeacherSpec:
    return TeacherSpec(
        model=cfg["model"],
        pretrained=cfg["pretrained"],
        checkpoint=cfg.get("checkpoint"),
        features=cfg["features"],
        overrides=dict(cfg.get("overrides") or {}),
    )


def decode_policy(cfg: dict) -> DecodePolicy:
    return DecodePolicy(max_pixels=cfg["max_pixels"], convert_modes=cfg["convert_modes"])


def extract_config(features: dict, images: dict) -> ExtractConfig:
    return ExtractConfig(
        batch_size=features["batch_size"],
        storage=features["storage"],
        row_group_images=features["row_group_images"],
        decode_threads=features["decode_threads"],
        policy=decode_policy(images),
    )


def train_dinoiser_from_images(
    refs: Sequence[ImageRef],
    spec: BackboneSpec,
    teacher: TeacherSpec,
    config: DinoiserTrainConfig,
    policy: DecodePolicy,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[DINOiser, dict]:
    """App. B.1: cache frozen CLIP features and binarised teacher affinities, then fit g."""
    model, preprocess, _ = load_clip(spec, device)
    visual = model.visual
    teacher_model = load_teacher(teacher, tuple(visual.grid_size), device)
    mean, std = visual.preprocess_cfg["mean"], visual.preprocess_cfg["std"]
    features, targets, rejected = [], [], 0
    bar = progress(len(refs), "teacher affinities", "img")
    with torch.no_grad():
        for good, images, bad in decoded_batches(refs, preprocess, batch_size, policy):
            rejected += len(bad)
            if images is not None:
                images = images.to(device)
                features.append(maskclip_features(visual, images).float().cpu())
                affinity = teacher_affinity(teacher_model, images, teacher.features, mean, std)
                targets.append(binarise(affinity, config.teacher_threshold).cpu())
            bar.update(len(good) + len(bad))
    bar.close()
    if not features:
        raise ValueError("no readable image to train the DINOiser on")
    bar = progress(config.epochs, "train DINOiser", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)

    g, metrics = train_dinoiser(torch.cat(features), torch.cat(targets), config, device, on_epoch)
    bar.close()
    metrics["rejected_images"] = rejected
    return g, metrics


def dense_encoder(
    spec: BackboneSpec,
    dinoiser_path: str | Path | None,
    gamma: float,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[DenseEncoder, object]:
    """The frozen CLIP + DINOiser feature encoder (weights in ``precision``) and its transform."""
    model, preprocess, _ = load_clip(spec, device)
    dinoiser = load_dinoiser(dinoiser_path).to(device) if dinoiser_path else None
    return DenseEncoder(model.visual, dinoiser, gamma, precision).to(device).eval(), preprocess


def extract_shard_from_index(
    index: pa.Table,
    shard: int,
    spec: BackboneSpec,
    dinoiser_path: str | Path | None,
    gamma: float,
    precision: str,
    config: ExtractConfig,
    device: torch.device,
    out_path: str | Path,
    rejected_path: str | Path,
) -> ShardStats:
    """Extract one shard of the image index to the feature contract."""
    refs = refs_of_shard(index, shard)
    if not refs:
        raise ValueError(f"shard {shard} is empty in the image index")
    encoder, preprocess = dense_encoder(spec, dinoiser_path, gamma, device, precision)
    bar = progress(len(refs), f"features shard {shard:05d}", "img")
    stats = extract_shard(
        encoder, preprocess, refs, out_path, rejected_path, spec.name, config, device, bar.update
    )
    bar.close()
    if stats.rejected:
        log.warning(
            "shard %05d: %d of %d images rejected (see %s)",
            shard,
            stats.rejected,
            len(refs),
            rejected_path,
        )
    return stats
