"""Concept heatmaps: where on an image a concept fires (paper Fig. 3, 4, C1-C9).

A concept's heatmap is its activation ``z_c(p)`` on the patch grid. It is drawn on the
image exactly as the encoder saw it (open_clip's resize and centre crop), upsampled
bilinearly, coloured with a perceptual colour map, and blended in proportion to the
activation, so patches where the concept is off show the image unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from insight.core.io import atomic_path
from insight.data.batches import BatchTransform
from insight.models.backbone import patch_grid
from insight.models.dense import DenseEncoder
from insight.sae.model import MatryoshkaBatchTopKSAE

COLOUR_MAP = "inferno"


@torch.no_grad()
def image_codes(
    image: Image.Image,
    encoder: DenseEncoder,
    transform: BatchTransform,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device | str = "cpu",
    batch_topk: bool = False,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """One image through the encoder and the SAE: the crop the encoder saw (H, W, 3) uint8,
    the patch features (N, d), the concept codes (N, m) (thresholded, or BatchTopK over the
    image's own patches when ``batch_topk``), and the patch grid (h, w)."""
    crop = transform.pil(image.convert("RGB"))
    x = transform.batch(torch.from_numpy(crop)[None], device)
    features = encoder(x)[0]
    codes = sae.encode_batch_topk(features) if batch_topk else sae.encode(features)
    return crop, features, codes, patch_grid(encoder.visual, *x.shape[-2:])


def concept_label(concept: int, name: str | None) -> str:
    """A concept's display name: its name, or ``concept N`` when it has none."""
    return name if name else f"concept {concept}"


def activation_grid(
    patches: np.ndarray, activations: np.ndarray, grid: tuple[int, int]
) -> np.ndarray:
    """A concept's sparse activations (row-major patch index, value) as an (h, w) map."""
    heat = np.zeros(grid[0] * grid[1], dtype=np.float32)
    heat[np.asarray(patches, dtype=np.int64)] = activations
    return heat.reshape(grid)


def overlay(
    crop: np.ndarray, heat: np.ndarray, vmax: float | None = None, alpha: float = 0.7
) -> Image.Image:
    """The heatmap (h, w) upsampled onto the crop (H, W, 3) uint8; ``vmax`` scales the
    colours (default: the map's own maximum)."""
    import matplotlib

    height, width = crop.shape[:2]
    scale = float(vmax if vmax is not None else heat.max())
    level = np.clip(heat / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(heat)
    level = np.asarray(
        Image.fromarray(level.astype(np.float32), mode="F").resize(
            (width, height), Image.Resampling.BILINEAR
        )
    ).clip(0.0, 1.0)
    colour = matplotlib.colormaps[COLOUR_MAP](level)[..., :3] * 255.0
    weight = (alpha * level)[..., None]
    blended = crop.astype(np.float32) * (1.0 - weight) + colour * weight
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def heatmap_figure(
    crop: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    path: str | Path,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> None:
    """The image followed by one titled overlay per concept (with an optional caption
    under each, e.g. its parents and children), saved atomically as PNG."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(panels) + 1
    height = 3.0 + (0.6 if captions else 0.0)
    figure, axes = plt.subplots(1, count, figsize=(2.6 * count, height), squeeze=False)
    axes[0, 0].imshow(crop)
    axes[0, 0].set_title("image", fontsize=9)
    for i, (axis, (label, heat)) in enumerate(zip(axes[0, 1:], panels, strict=True)):
        axis.imshow(overlay(crop, heat))
        axis.set_title(label, fontsize=9)
        if captions:
            axis.set_xlabel(textwrap.fill(captions[i], 34), fontsize=7)
    for axis in axes[0]:
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)
