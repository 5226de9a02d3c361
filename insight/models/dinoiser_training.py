"""Training the DINOiser head g (App. B.1): teachers, binarised affinities, the loss of Eq. 2 and the training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from insight.core.logs import progress
from insight.core.sections import DinoiserSettings, TeacherSettings
from insight.core.settings import from_settings
from insight.data.batches import BatchTransform, decoded_batches
from insight.data.images import DecodePolicy, ImageRef
from insight.models.backbone import (
    QKV,
    BackboneSpec,
    MissingWeightsError,
    last_block_projection,
    load_clip,
    maskclip_features,
    maskclip_with_block_tokens,
)
from insight.models.dinoiser import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PUBLISHED_BLOCK,
    AnyDINOiser,
    ClipDINOiserHead,
    DINOiser,
    cosine_affinity,
)


def affinity_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. B.2: BCE between predicted affinities (as logits) and binarised teacher affinities."""
    return F.binary_cross_entropy_with_logits(predicted, target.to(predicted.dtype))


CLIP_TEACHER = "clip"


@dataclass(frozen=True)
class TeacherSpec:
    """A DINO teacher built by timm: a model name, ``pretrained`` weights from the hub
    cache, or a local ``checkpoint`` file; ``overrides`` are timm kwargs (a tiny demo ViT).
    ``model: clip`` uses the backbone itself (its last block's q/k/v features), for a
    backbone with no DINO counterpart such as the demo's world-trained CLIP."""

    model: str = "vit_base_patch16_224.dino"
    pretrained: bool = True
    checkpoint: str | None = None
    features: str = "key"
    overrides: dict = field(default_factory=dict)


def load_teacher(
    spec: TeacherSpec, grid: tuple[int, int], device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the timm teacher with an input size giving ``grid`` patches, frozen, in eval mode."""
    import timm  # deferred: only training needs the teacher

    if spec.features not in ("key", "query", "value"):
        raise ValueError(
            f"dinoiser.teacher.features must be key, query or value, got {spec.features!r}"
        )
    kwargs = dict(spec.overrides)
    pretrained = spec.pretrained or bool(spec.checkpoint)
    if spec.checkpoint:
        kwargs["pretrained_cfg_overlay"] = {"file": spec.checkpoint}
    probe = timm.create_model(spec.model, pretrained=False, num_classes=0, **_without_file(kwargs))
    patch = probe.patch_embed.patch_size
    kwargs["img_size"] = (grid[0] * patch[0], grid[1] * patch[1])
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random teacher (demo, tests) is the same in every run
            teacher = timm.create_model(spec.model, pretrained=pretrained, num_classes=0, **kwargs)
    except Exception as err:  # hub download failure offline, or a missing local file
        if not pretrained:
            raise
        raise MissingWeightsError(
            f"could not load DINO teacher weights for {spec.model} ({type(err).__name__}: {err}). "
            "Offline: download the teacher's weights file (timm/Hugging Face) and set "
            "dinoiser.teacher.checkpoint to it, or pre-fill the Hugging Face cache (HF_HOME)"
        ) from err
    return teacher.to(device).eval().requires_grad_(False)


def _without_file(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}


def clip_teacher_affinity(
    visual: nn.Module, clip_images: torch.Tensor, features: str = "key"
) -> torch.Tensor:
    """Cosine affinities ``(B, N, N)`` of the backbone's own last-block q/k/v features."""
    return cosine_affinity(last_block_projection(visual, clip_images, features))


def teacher_affinity(
    teacher: nn.Module,
    clip_images: torch.Tensor,
    features: str = "key",
    clip_mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
    clip_std: tuple[float, ...] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Cosine affinities ``(B, N, N)`` of the teacher's last-block q/k/v patch features.

    ``clip_images`` are CLIP-normalised; they are mapped back to pixels, resized to the
    teacher's input size and normalised with the teacher's own statistics.
    """
    pretrained = teacher.pretrained_cfg
    device = clip_images.device
    mean = torch.tensor(clip_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip_std, device=device).view(1, 3, 1, 1)
    pixels = clip_images.float() * std + mean
    size = teacher.patch_embed.img_size
    if tuple(pixels.shape[-2:]) != tuple(size):
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
    t_mean = torch.tensor(pretrained.get("mean", (0.485, 0.456, 0.406)), device=device).view(
        1, 3, 1, 1
    )
    t_std = torch.tensor(pretrained.get("std", (0.229, 0.224, 0.225)), device=device).view(
        1, 3, 1, 1
    )
    captured: list[torch.Tensor] = []
    hook = teacher.blocks[-1].attn.qkv.register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    try:
        teacher.forward_features((pixels - t_mean) / t_std)
    finally:
        hook.remove()
    qkv = captured[0]
    batch, tokens, three_c = qkv.shape
    which = QKV.index(features)
    feats = qkv.reshape(batch, tokens, 3, three_c // 3)[:, teacher.num_prefix_tokens :, which]
    grid = teacher.patch_embed.grid_size
    return cosine_affinity(feats.transpose(1, 2).reshape(batch, -1, grid[0], grid[1]))


@dataclass(frozen=True)
class DinoiserTrainConfig:
    epochs: int = 100
    lr: float = 5e-5
    batch_size: int = 16
    teacher_threshold: float = 0.2
    d_out: int = 64
    seed: int = 0
    head: str = "published"  # CLIP-DINOiser's layout, trained on block -3 tokens; or "paper"


def new_head(config: DinoiserTrainConfig, d_in: int) -> AnyDINOiser:
    """An untrained head of ``config.head``: the published one reads ``d_in``-wide block
    tokens (its background decoder is not fitted here), the paper's the d_in-dim features."""
    if config.head == "published":
        return ClipDINOiserHead(d_in, has_foreground=False)
    return DINOiser(d_in, config.d_out)


def head_inputs(visual: nn.Module, images: torch.Tensor, head: str) -> torch.Tensor:
    """What g reads: block -3 tokens (published head) or the MaskCLIP features (paper)."""
    if head == "published":
        return maskclip_with_block_tokens(visual, images, PUBLISHED_BLOCK)[1]
    return maskclip_features(visual, images)


def train_dinoiser(
    features: torch.Tensor,
    targets: torch.Tensor,
    config: DinoiserTrainConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[AnyDINOiser, dict]:
    """Fit g on cached frozen inputs (App. B.1): what the head reads ``(n, d, h, w)`` (see
    :func:`head_inputs`) against binarised teacher affinities ``targets (n, N, N)`` with Adam.

    The backbone and teacher are frozen, so their outputs are computed once and the
    epochs iterate over the cache. Returns g and metrics (final loss, pair accuracy).
    """
    if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
        raise ValueError(
            "train_dinoiser needs the same, non-zero number of feature maps and targets"
        )
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = new_head(config, features.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n = features.shape[0]
    epoch_loss = float("nan")
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            feats = features[idx].to(device, torch.float32)
            target = targets[idx].to(device)
            loss = affinity_loss(model.affinity(feats), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"DINOiser loss is {loss.item()} at epoch {epoch}, batch at {start}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        epoch_loss = total / n
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    with torch.no_grad():
        correct = 0
        for start in range(0, n, config.batch_size):
            pred = (
                model.affinity(
                    features[start : start + config.batch_size].to(device, torch.float32)
                )
                > 0
            )
            correct += (
                (pred == targets[start : start + config.batch_size].to(device))
                .float()
                .mean(dim=(1, 2))
                .sum()
                .item()
            )
    metrics = {
        "final_loss": epoch_loss,
        "pair_accuracy": correct / n,
        "images": n,
        "epochs": config.epochs,
    }
    return model.cpu(), metrics


def binarise(affinity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Binarised teacher affinities ``A_xi > threshold`` (App. B.1, gamma = 0.2)."""
    return affinity > threshold


def stack_batches(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    feats, targets = zip(*batches, strict=True)
    return torch.cat(feats), torch.cat(targets)


def teacher_spec(settings: TeacherSettings) -> TeacherSpec:
    """The :class:`TeacherSpec` of the ``dinoiser.teacher`` settings."""
    return from_settings(TeacherSpec, settings)


def dinoiser_train_config(settings: DinoiserSettings) -> DinoiserTrainConfig:
    """The head's training settings from the ``dinoiser`` section (App. B.1)."""
    return from_settings(DinoiserTrainConfig, settings)


def sample_training_images(index: pa.Table, count: int, seed: int) -> list[ImageRef]:
    """``count`` images drawn at random (with the run's seed) from the whole index, as App.
    B.1's "randomly sampled" ImageNet images; an index sorted by path (ImageNet's class
    folders) would otherwise give ``count`` images of its first classes. Returned in index
    order, so tar members are read shard by shard."""
    rows = np.random.default_rng(seed).choice(len(index), min(count, len(index)), replace=False)
    chosen = index.take(pa.array(np.sort(rows))).to_pylist()
    return [ImageRef(r["image_id"], r["path"], r["member"]) for r in chosen]


def train_dinoiser_from_images(
    refs: Sequence[ImageRef],
    spec: BackboneSpec,
    teacher: TeacherSpec,
    config: DinoiserTrainConfig,
    policy: DecodePolicy,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[AnyDINOiser, dict]:
    """App. B.1: cache frozen CLIP features and binarised teacher affinities, then fit g."""
    model, preprocess, _ = load_clip(spec, device)
    transform = BatchTransform(preprocess)
    visual = model.visual
    mean, std = visual.preprocess_cfg["mean"], visual.preprocess_cfg["std"]
    if teacher.model == CLIP_TEACHER:

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return clip_teacher_affinity(visual, images, teacher.features)
    else:
        teacher_model = load_teacher(teacher, tuple(visual.grid_size), device)

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return teacher_affinity(teacher_model, images, teacher.features, mean, std)

    features, targets, rejected = [], [], 0
    bar = progress(len(refs), "teacher affinities", "img")
    with torch.no_grad():
        for good, pixels, bad in decoded_batches(refs, transform, batch_size, policy):
            rejected += len(bad)
            if pixels is not None:
                images = transform.batch(pixels, device)
                features.append(head_inputs(visual, images, config.head).float().cpu())
                affinity = affinity_of(images)
                targets.append(binarise(affinity, config.teacher_threshold).cpu())
            bar.update(len(good) + len(bad))
    bar.close()
    if not features:
        raise ValueError("no readable image to train the DINOiser on")
    bar = progress(config.epochs, "train DINOiser", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    g, metrics = train_dinoiser(torch.cat(features), torch.cat(targets), config, device, on_epoch)
    bar.close()
    metrics["rejected_images"] = rejected
    return g, metrics
