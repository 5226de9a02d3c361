"""Training the DINOiser head g (App. B.1): binarised teacher affinities
(:mod:`insight.models.teachers`), the loss of Eq. B.2 and the two training recipes.

``release`` trains as CLIP-DINOiser's ``train.py`` does: fresh random 448-px crops of every
image at every step (flip, brightness jitter 0.5), the predicted cosines clamped at 0
before the BCE, AdamW, and the learning rate times 0.1 after 5,000 steps. ``cached`` is the
project's faster reading of App. B.1: CLIP inputs and teacher targets computed once at the
backbone's native size, Adam at a constant rate, the raw cosines as logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn

from insight.core.logs import progress
from insight.core.sections import DinoiserSettings
from insight.core.settings import from_settings
from insight.data.batches import BatchTransform, decoded_batches
from insight.data.images import DecodePolicy, ImageRef
from insight.models.backbone import (
    BackboneSpec,
    load_clip,
    maskclip_features,
    maskclip_with_block_tokens,
    patch_grid,
)
from insight.models.dinoiser import (
    PUBLISHED_BLOCK,
    AnyDINOiser,
    ClipDINOiserHead,
    DINOiser,
)
from insight.models.teachers import (
    CLIP_TEACHER,
    TeacherSpec,
    clip_teacher_affinity,
    load_teacher,
    teacher_affinity,
)

RECIPES = ("release", "cached")


def affinity_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. B.2: BCE between predicted affinities (as logits) and binarised teacher affinities."""
    return F.binary_cross_entropy_with_logits(predicted, target.to(predicted.dtype))


def affinity_logits(model: AnyDINOiser, inputs: torch.Tensor, recipe: str) -> torch.Tensor:
    """The logits of Eq. B.2: g's cosines A^phi (Eq. B.1), clamped at 0 under the
    ``release`` recipe (its ``pred_corrs[pred_corrs < 0] = 0``), raw under ``cached``."""
    affinity = model.affinity(inputs)
    return affinity.clamp(min=0.0) if recipe == "release" else affinity


@dataclass(frozen=True)
class DinoiserTrainConfig:
    epochs: int = 100
    lr: float = 5e-5
    batch_size: int = 16
    teacher_threshold: float = 0.2
    d_out: int = 64
    seed: int = 0
    head: str = "published"  # CLIP-DINOiser's layout, trained on block -3 tokens; or "paper"
    recipe: str = "release"  # see the module docstring; or "cached"
    crop_size: int = 448
    lr_step_at: int = 5000
    lr_step_factor: float = 0.1


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


class HeadFit:
    """g with its optimiser under ``config.recipe``: AdamW with the rate times
    ``lr_step_factor`` after ``lr_step_at`` steps (release), or Adam at a constant rate
    (cached). Created from the width of the first inputs, with ``config.seed``."""

    def __init__(self, config: DinoiserTrainConfig, d_in: int, device: torch.device | str):
        if config.recipe not in RECIPES:
            raise ValueError(f"dinoiser.recipe must be one of {RECIPES}, got {config.recipe!r}")
        torch.manual_seed(config.seed)
        self.config = config
        self.model = new_head(config, d_in).to(device)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if config.recipe == "release":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=config.lr
            )
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, [config.lr_step_at], gamma=config.lr_step_factor
            )
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.steps = 0

    def step(self, inputs: torch.Tensor, target: torch.Tensor, where: str) -> float:
        """One optimiser step on a batch; returns its loss."""
        loss = affinity_loss(affinity_logits(self.model, inputs, self.config.recipe), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DINOiser loss is {loss.item()} at {where}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1
        return loss.item()

    @torch.no_grad()
    def correct_pairs(self, inputs: torch.Tensor, target: torch.Tensor) -> float:
        """Summed per-image share of pairs whose predicted cosine has the target's sign."""
        predicted = self.model.affinity(inputs) > 0
        return (predicted == target).float().mean(dim=(1, 2)).sum().item()

    def metrics(self, loss: float, correct: float, images: int) -> dict:
        return {
            "final_loss": loss,
            "pair_accuracy": correct / images,
            "images": images,
            "epochs": self.config.epochs,
            "recipe": self.config.recipe,
            "steps": self.steps,
            "final_lr": self.optimizer.param_groups[0]["lr"],
        }


def train_dinoiser(
    features: torch.Tensor,
    targets: torch.Tensor,
    config: DinoiserTrainConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[AnyDINOiser, dict]:
    """Fit g on cached frozen inputs (App. B.1): what the head reads ``(n, d, h, w)`` (see
    :func:`head_inputs`) against binarised teacher affinities ``targets (n, N, N)``.

    The backbone and teacher are frozen, so their outputs are computed once and the
    epochs iterate over the cache. Returns g and metrics (final loss, pair accuracy).
    """
    if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
        raise ValueError(
            "train_dinoiser needs the same, non-zero number of feature maps and targets"
        )
    generator = torch.Generator().manual_seed(config.seed)
    fit = HeadFit(config, features.shape[1], device)
    n = features.shape[0]
    epoch_loss = float("nan")
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            feats = features[idx].to(device, torch.float32)
            loss = fit.step(feats, targets[idx].to(device), f"epoch {epoch}, batch at {start}")
            total += loss * len(idx)
        epoch_loss = total / n
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    correct = sum(
        fit.correct_pairs(
            features[start : start + config.batch_size].to(device, torch.float32),
            targets[start : start + config.batch_size].to(device),
        )
        for start in range(0, n, config.batch_size)
    )
    return fit.model.cpu(), fit.metrics(epoch_loss, correct, n)


def release_crops(
    images: Sequence[torch.Tensor], size: int, generator: torch.Generator
) -> torch.Tensor:
    """CLIP-DINOiser's training augmentation after its short-side resize: a random
    ``size`` x ``size`` crop, a horizontal flip with p = 0.5 and ``ColorJitter(0.5)`` (pixels
    times a brightness factor drawn from [0.5, 1.5], clipped to [0, 1]), for ``(H, W, 3)``
    uint8 images whose short side is ``size``; returns ``(B, 3, size, size)`` in [0, 1]."""
    crops = []
    for image in images:
        height, width = image.shape[:2]
        if min(height, width) < size:
            raise ValueError(f"release_crops: a {height}x{width} image is smaller than {size}")
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        crop = image[top : top + size, left : left + size].permute(2, 0, 1).float() / 255.0
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        brightness = 0.5 + float(torch.rand(1, generator=generator))
        crops.append((crop * brightness).clamp_(0.0, 1.0))
    return torch.stack(crops)


def train_dinoiser_on_crops(
    images: Sequence[torch.Tensor],
    inputs_and_targets: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    config: DinoiserTrainConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[AnyDINOiser, dict]:
    """The ``release`` recipe: every step draws fresh :func:`release_crops` of its images,
    and ``inputs_and_targets`` (frozen CLIP and teacher, no gradient) turns the crops in
    [0, 1] into what g reads and the binarised teacher affinities. Pair accuracy is that
    of the last epoch's crops."""
    if not images:
        raise ValueError("train_dinoiser_on_crops needs at least one image")
    generator = torch.Generator().manual_seed(config.seed)
    fit: HeadFit | None = None
    n = len(images)
    epoch_loss, correct = float("nan"), 0.0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        total, correct = 0.0, 0.0
        for start in range(0, n, config.batch_size):
            batch = [images[i] for i in order[start : start + config.batch_size]]
            crops = release_crops(batch, config.crop_size, generator).to(device)
            with torch.no_grad():
                inputs, target = inputs_and_targets(crops)
            inputs = inputs.float()
            if fit is None:
                fit = HeadFit(config, inputs.shape[1], device)
            total += fit.step(inputs, target, f"epoch {epoch}, batch at {start}") * len(batch)
            correct += fit.correct_pairs(inputs, target)
        epoch_loss = total / n
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    assert fit is not None
    return fit.model.cpu(), fit.metrics(epoch_loss, correct, n)


def binarise(affinity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Binarised teacher affinities ``A_xi > threshold`` (App. B.1, gamma = 0.2)."""
    return affinity > threshold


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
    """App. B.1 under ``config.recipe``: ``cached`` computes frozen CLIP inputs and binarised
    teacher affinities once at the backbone's size; ``release`` keeps the images decoded
    with their short side at ``config.crop_size`` (about 0.8 MB each at 448) and computes
    both on fresh crops at every step (:func:`train_dinoiser_on_crops`)."""
    model, preprocess, _ = load_clip(spec, device)
    visual = model.visual
    mean, std = visual.preprocess_cfg["mean"], visual.preprocess_cfg["std"]
    if config.recipe == "release":
        side = config.crop_size
        transform = BatchTransform(
            T.Compose(
                [
                    T.Resize(side, interpolation=T.InterpolationMode.BILINEAR),
                    T.ToTensor(),
                    T.Normalize(mean, std),
                ]
            )
        )
        grid = patch_grid(visual, side, side)
    else:
        transform = BatchTransform(preprocess)
        grid = tuple(visual.grid_size)
    if teacher.model == CLIP_TEACHER:

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return clip_teacher_affinity(visual, images, teacher.features)
    else:
        teacher_model = load_teacher(teacher, grid, device)

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return teacher_affinity(teacher_model, images, teacher.features, mean, std)

    def inputs_and_targets(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = head_inputs(visual, images, config.head).float()
        return inputs, binarise(affinity_of(images), config.teacher_threshold)

    kept, rejected = [], 0
    bar = progress(
        len(refs), "decode" if config.recipe == "release" else "teacher affinities", "img"
    )
    with torch.no_grad():
        step = 1 if config.recipe == "release" else batch_size  # release images differ in size
        for good, pixels, bad in decoded_batches(refs, transform, step, policy):
            rejected += len(bad)
            if pixels is not None and config.recipe == "release":
                kept.append(pixels[0])
            elif pixels is not None:
                inputs, targets = inputs_and_targets(transform.batch(pixels, device))
                kept.append((inputs.cpu(), targets.cpu()))
            bar.update(len(good) + len(bad))
    bar.close()
    if not kept:
        raise ValueError("no readable image to train the DINOiser on")
    bar = progress(config.epochs, f"train DINOiser ({config.recipe})", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    if config.recipe == "release":
        pixel_mean, pixel_std = transform.mean.to(device), transform.std.to(device)

        def crop_inputs(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return inputs_and_targets((crops - pixel_mean) / pixel_std)  # transform's Normalize

        g, metrics = train_dinoiser_on_crops(kept, crop_inputs, config, device, on_epoch)
    else:
        inputs, targets = (torch.cat(part) for part in zip(*kept, strict=True))
        g, metrics = train_dinoiser(inputs, targets, config, device, on_epoch)
    bar.close()
    metrics["rejected_images"] = rejected
    return g, metrics
