"""Concept explanations of open-vocabulary segments (Sec. 4.4, Fig. 7).

Two readings of the contribution of concept c to label t over a segment S (the patches
predicted t), selected by ``ovs.explanation``:

- ``release`` (the default; the release's ``cfm.py``): ``mean_{p in S} z_c(p) <W_dec[c], t>
  / |x_hat(p)|``, with the decoder bias's share ``mean_{p in S} <b_dec, t> / |x_hat(p)|``
  beside it; concepts and bias sum exactly to the segment's mean ``cos(x_hat(p), t)``, the
  score the segmentation itself used.
- ``cosine``: ``mean_{p in S} z_c(p) * cos(W_dec[c], t)``: the concept's mean activation on
  the segment times how much its decoder direction points at the label's text embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from insight.core.io import atomic_path
from insight.data.batches import BatchTransform
from insight.data.palette import voc_palette
from insight.models.backbone import patch_grid
from insight.models.dense import DenseEncoder
from insight.sae.model import MatryoshkaBatchTopKSAE
from insight.tasks.segmentation import resize_to_protocol
from insight.views.heatmaps import concept_label


def concept_contributions(
    codes: torch.Tensor, segment: torch.Tensor, w_dec: torch.Tensor, label_text: torch.Tensor
) -> torch.Tensor:
    """Contribution of every concept (m,) to a label over the patches in ``segment`` (bool, N):
    mean activation on the segment times cos(W_dec[c], text(label))."""
    if not bool(segment.any()):
        return torch.zeros(w_dec.shape[0], device=w_dec.device)
    cos = F.normalize(w_dec, dim=-1) @ F.normalize(label_text, dim=-1)
    return codes[segment].mean(0) * cos


EXPLANATIONS = ("release", "cosine")


def release_contributions(
    codes: torch.Tensor,
    segment: torch.Tensor,
    w_dec: torch.Tensor,
    b_dec: torch.Tensor,
    label_text: torch.Tensor,
) -> tuple[torch.Tensor, float]:
    """The release's split of the segment's mean cosine with the (unit) label embedding:
    per concept ``mean_p z_c(p) <W_dec[c], t> / |x_hat(p)|`` (m,) and the bias's share."""
    if not bool(segment.any()):
        return torch.zeros(w_dec.shape[0], device=w_dec.device), 0.0
    text = F.normalize(label_text, dim=-1)
    z = codes[segment]
    norms = (z @ w_dec + b_dec).norm(dim=-1, keepdim=True).clamp(min=1e-12)
    per_concept = ((z / norms) * (w_dec @ text)).mean(0)
    bias = float(((b_dec @ text) / norms).mean())
    return per_concept, bias


@torch.no_grad()
def explain_image(
    image: Image.Image,
    encoder: DenseEncoder,
    transform: BatchTransform,
    text: torch.Tensor,
    sae: MatryoshkaBatchTopKSAE,
    class_names: Sequence[str],
    short_side: int = 448,
    top: int = 8,
    device: torch.device | str = "cpu",
    reading: str = "release",
) -> dict:
    """One forward of the whole (protocol-resized) image: the thresholded codes, the patch
    segmentation of the SAE reconstruction, the most common label and its top concepts."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))[None]
    x = resize_to_protocol(transform.batch(pixels, device), short_side)
    features = encoder(x)[0]
    grid = patch_grid(encoder.visual, *x.shape[-2:])
    codes = sae.encode(features)
    reconstruction = F.normalize(sae.decode(codes), dim=-1)
    prediction = (reconstruction @ text.T).argmax(-1)
    label = int(torch.bincount(prediction, minlength=text.shape[0]).argmax())
    segment = prediction == label
    if reading not in EXPLANATIONS:
        raise ValueError(f"ovs.explanation must be one of {EXPLANATIONS}, not {reading!r}")
    bias = None
    if reading == "release":
        contributions, bias = release_contributions(
            codes, segment, sae.W_dec, sae.b_dec, text[label]
        )
    else:
        contributions = concept_contributions(codes, segment, sae.W_dec, text[label])
    order = torch.argsort(contributions, descending=True)[:top]
    return {
        "label": class_names[label],
        "reading": reading,
        "segmentation": prediction.reshape(grid).cpu().numpy(),
        "concepts": [int(c) for c in order],
        "contributions": [float(contributions[c]) for c in order],
        "bias": bias,
    }


def save_prediction_png(prediction: np.ndarray, path: str | Path) -> None:
    """A label map as a palette PNG (VOC colours), written atomically."""
    png = Image.frombytes(
        "P", (prediction.shape[1], prediction.shape[0]), prediction.astype(np.uint8).tobytes()
    )
    png.putpalette(voc_palette())
    with atomic_path(path) as tmp:
        png.save(tmp, format="PNG")


def explanation_figure(
    image: Image.Image, explanation: dict, names: dict[int, str], path: str | Path
) -> None:
    """Image, patch segmentation, and the label's top concepts as a bar plot (named)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    axes[0].imshow(image)
    axes[0].set_title("image")
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
    axes[1].imshow(palette[explanation["segmentation"] % 256], interpolation="nearest")
    axes[1].set_title(f"segments (label: {explanation['label']})")
    for axis in axes[:2]:
        axis.axis("off")
    labels = [concept_label(c, names.get(c)) for c in explanation["concepts"]]
    axes[2].barh(range(len(labels))[::-1], explanation["contributions"], color="#2b8a3e")
    axes[2].set_yticks(range(len(labels))[::-1], labels)
    axes[2].set_xlabel(
        "activation x <decoder, label text> / |reconstruction|"
        if explanation.get("reading") == "release"
        else "activation x cos(decoder, label text)"
    )
    axes[2].set_title(f"concepts behind '{explanation['label']}'")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
