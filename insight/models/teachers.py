"""The DINOiser's teachers (App. B.1): a timm DINO model, or the backbone's own last
block, whose q/k/v patch features give the affinities the head g learns (Eq. B.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from insight.core.sections import TeacherSettings
from insight.core.settings import from_settings
from insight.models.backbone import QKV, MissingWeightsError, last_block_projection
from insight.models.dinoiser import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, cosine_affinity

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
    features: str = "value"
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


def teacher_spec(settings: TeacherSettings) -> TeacherSpec:
    """The :class:`TeacherSpec` of the ``dinoiser.teacher`` settings."""
    return from_settings(TeacherSpec, settings)
