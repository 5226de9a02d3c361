"""The frozen models a job loads once: CLIP, its tokenizer, the DINOised dense encoder and the image transform."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from insight.core.runtime import effective_precision
from insight.core.sections import Settings
from insight.core.settings import head_backbone_mismatch
from insight.data.batches import BatchTransform
from insight.models.backbone import (
    BackboneSpec,
    backbone_identity,
    backbone_spec,
    load_clip,
)
from insight.models.dense import DenseEncoder
from insight.models.dinoiser import load_dinoiser, recorded_backbone


@dataclasses.dataclass
class FrozenModels:
    """What a model job loads once: the frozen CLIP (text tower, global embedding), its
    tokenizer, the DINOised dense encoder over its visual tower, and the image transform."""

    model: torch.nn.Module
    tokenizer: object
    encoder: DenseEncoder
    transform: BatchTransform


@dataclasses.dataclass(frozen=True)
class FrozenSpec:
    """What :func:`load_frozen` loads: the CLIP backbone, the DINOiser weights (None: plain
    MaskCLIP features), the guided-pooling threshold gamma (Eq. 1) and the precision the
    visual weights are cast to."""

    backbone: BackboneSpec
    dinoiser_path: str | Path | None
    gamma: float
    precision: str = "fp32"


def model_bundle(
    settings: Settings, dinoiser: Sequence[str | Path] | str | Path | None
) -> FrozenSpec:
    """The frozen models every model job and the ``insight`` commands load: the backbone,
    the DINOiser weights (a job's ``dinoiser`` input: empty when the DINOiser is disabled,
    else its one file), gamma (Eq. 1) and ``features.precision``. It reads exactly the
    settings :data:`insight.core.settings.MODEL_BUNDLE_KEYS` names, the params of every
    rule that calls it."""
    if isinstance(dinoiser, str | Path):
        dinoiser = [dinoiser]
    return FrozenSpec(
        backbone_spec(settings.backbone),
        dinoiser[0] if dinoiser else None,
        settings.dinoiser.gamma,
        settings.features.precision,
    )


def check_head_backbone(head: str | Path, backbone: BackboneSpec) -> None:
    """A head file that records another CLIP than ``backbone`` is a one-line error naming
    both (a released ``.pt`` records none: ``dinoiser.checkpoint_backbone`` says it)."""
    recorded, identity = recorded_backbone(head), backbone_identity(backbone)
    if recorded and recorded != identity:
        raise ValueError(head_backbone_mismatch(head, recorded, identity))


def load_frozen(frozen: FrozenSpec, device: torch.device) -> FrozenModels:
    """Load CLIP and the DINOiser once; the visual weights are cast to ``frozen.precision``."""
    if frozen.dinoiser_path:
        check_head_backbone(frozen.dinoiser_path, frozen.backbone)
    model, preprocess, tokenizer = load_clip(frozen.backbone, device)
    dinoiser = load_dinoiser(frozen.dinoiser_path).to(device) if frozen.dinoiser_path else None
    precision = effective_precision(frozen.precision, torch.device(device))
    encoder = DenseEncoder(model.visual, dinoiser, frozen.gamma, precision)
    return FrozenModels(model, tokenizer, encoder.to(device).eval(), BatchTransform(preprocess))


def squashed_input(
    image_path: str | Path, models: FrozenModels, device: torch.device
) -> torch.Tensor:
    """One image resized (squashed, bicubic) to the model's input size and normalised, as a
    batch of one: its patch grid then maps onto the image's label map exactly."""
    size = tuple(models.model.visual.image_size)
    with Image.open(image_path) as image:
        pixels = np.array(image.convert("RGB").resize(size[::-1], Image.BICUBIC), np.uint8)
    return models.transform.batch(torch.from_numpy(pixels)[None], device)
