"""CLIP-DINOiser: the 3x3 convolution g, guided pooling and its training (Sec. 3.1, App. B.1).

Choices where the paper leaves room (tested in tests/test_dinoiser.py):
- g is ``Conv2d(d, d', 3, padding=1)`` so the patch grid keeps its size.
- Eq. B.2 applies a binary cross-entropy to cosine affinities in [-1, 1], which are not
  probabilities. As in the CLIP-DINOiser release we treat the cosine as a *logit*
  (``binary_cross_entropy_with_logits``); the loss is averaged over all patch pairs.
- Guided pooling (Eq. 1) zeroes affinities below gamma before normalising; the diagonal
  (cosine 1) keeps every denominator positive.
- Teacher affinities are cosines between the last block's *key* features of a timm DINO
  ViT (``value`` or ``query`` selectable), with the teacher's input resized so that its
  patch grid equals CLIP's (224 px for DINO ViT-B/16, 196 px for DINOv2 ViT-B/14).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from insight.backbone import QKV, MissingWeightsError, last_block_projection
from insight.io import load_safetensors, save_safetensors

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def cosine_affinity(features: torch.Tensor) -> torch.Tensor:
    """Patch-to-patch cosine similarity ``(B, N, N)`` of features ``(B, C, h, w)`` (Eq. 2)."""
    flat = F.normalize(features.flatten(2).float(), dim=1)
    return flat.transpose(1, 2) @ flat


def guided_pooling(features: torch.Tensor, affinity: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 1: ``F+_p = sum_q A_pq F_q / sum_q A_pq`` with ``A_pq < gamma`` set to 0.

    ``features`` is ``(B, d, h, w)``, ``affinity`` ``(B, N, N)`` with N = h*w; returns
    ``(B, d, h, w)`` in float32.
    """
    batch, dim, height, width = features.shape
    weights = affinity.float().masked_fill(affinity < gamma, 0.0)
    denominator = weights.sum(dim=-1, keepdim=True)
    if bool((denominator <= 0).any()):
        raise ValueError("guided pooling: a patch has no affinity >= gamma (not even to itself)")
    flat = features.flatten(2).float().transpose(1, 2)  # (B, N, d)
    pooled = (weights @ flat) / denominator
    return pooled.transpose(1, 2).reshape(batch, dim, height, width)


class DINOiser(nn.Module):
    """The convolution g: R^d -> R^d' (d' = 64) whose feature cosines predict DINO affinities."""

    def __init__(self, d_in: int = 512, d_out: int = 64):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.g = nn.Conv2d(d_in, d_out, kernel_size=3, padding=1)

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted affinities A^phi (Eq. 2 / B.1) of CLIP dense features ``(B, d, h, w)``."""
        return cosine_affinity(self.g(features.to(self.g.weight.dtype)))

    def forward(self, features: torch.Tensor, gamma: float = 0.2) -> torch.Tensor:
        """DINOised features F+ (Eq. 1 with the affinities of Eq. 2)."""
        return guided_pooling(features, self.affinity(features), gamma)


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
    cfg = teacher.pretrained_cfg
    device = clip_images.device
    mean = torch.tensor(clip_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip_std, device=device).view(1, 3, 1, 1)
    pixels = clip_images.float() * std + mean
    size = teacher.patch_embed.img_size
    if tuple(pixels.shape[-2:]) != tuple(size):
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
    t_mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
    t_std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)
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


def train_dinoiser(
    features: torch.Tensor,
    targets: torch.Tensor,
    config: DinoiserTrainConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[DINOiser, dict]:
    """Fit g on cached frozen inputs (App. B.1): CLIP dense ``features (n, d, h, w)``
    against binarised teacher affinities ``targets (n, N, N)`` with Adam.

    The backbone and teacher are frozen, so their outputs are computed once and the
    epochs iterate over the cache. Returns g and metrics (final loss, pair accuracy).
    """
    if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
        raise ValueError(
            "train_dinoiser needs the same, non-zero number of feature maps and targets"
        )
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = DINOiser(features.shape[1], config.d_out).to(device)
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


def save_dinoiser(model: DINOiser, path: str | Path) -> None:
    save_safetensors(
        {"g.weight": model.g.weight, "g.bias": model.g.bias},
        path,
        metadata={"d_in": str(model.d_in), "d_out": str(model.d_out)},
    )


def load_dinoiser(path: str | Path) -> DINOiser:
    tensors, metadata = load_safetensors(path)
    d_out, d_in = tensors["g.weight"].shape[:2]
    model = DINOiser(d_in, d_out)
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False)
