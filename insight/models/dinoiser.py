"""CLIP-DINOiser: the 3x3 convolution g, guided pooling and its training (Sec. 3.1, App. B.1).

Choices where the paper leaves room (tested in tests/models/test_dinoiser.py):
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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from insight.core.io import load_safetensors, save_safetensors

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
