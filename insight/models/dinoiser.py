"""CLIP-DINOiser: the 3x3 convolution g, guided pooling and its training (Sec. 3.1, App. B.1).

Two heads, selected by ``dinoiser.head``:

- ``published`` (:class:`ClipDINOiserHead`): the head CLIP-DINOiser released
  (``checkpoints/last.pt``) and the paper builds on ("we use pretrained CLIP-DINOiser",
  Fig. 2). g reads the patch tokens of the ViT's block -3 after its ``ln_2`` (768-d for
  ViT-B/16) through a 3x3 replicate-padded conv to 256-d; a 1x1 conv on the L2-normalised
  tokens, through a sigmoid, is the foreground score used for the FOUND background rule.
  Pooling divides by the row sum + 1e-6, as the release does.
- ``paper`` (:class:`DINOiser`): App. B.1 as printed, g on the final 512-d MaskCLIP
  features, 512 -> 64 (zero padding), no background head.

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

from insight.core.io import load_safetensors, safetensors_metadata, save_safetensors
from insight.core.settings import CLIP_DINOISER_URL

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def cosine_affinity(features: torch.Tensor) -> torch.Tensor:
    """Patch-to-patch cosine similarity ``(B, N, N)`` of features ``(B, C, h, w)`` (Eq. 2)."""
    flat = F.normalize(features.flatten(2).float(), dim=1)
    return flat.transpose(1, 2) @ flat


def guided_pooling(
    features: torch.Tensor, affinity: torch.Tensor, gamma: float, eps: float = 0.0
) -> torch.Tensor:
    """Eq. 1: ``F+_p = sum_q A_pq F_q / (sum_q A_pq + eps)`` with ``A_pq < gamma`` set to 0.

    ``features`` is ``(B, d, h, w)``, ``affinity`` ``(B, N, N)`` with N = h*w; returns
    ``(B, d, h, w)`` in float32.
    """
    batch, dim, height, width = features.shape
    weights = affinity.float().masked_fill(affinity < gamma, 0.0)
    denominator = weights.sum(dim=-1, keepdim=True) + eps
    if bool((denominator <= 0).any()):
        raise ValueError("guided pooling: a patch has no affinity >= gamma (not even to itself)")
    flat = features.flatten(2).float().transpose(1, 2)  # (B, N, d)
    pooled = (weights @ flat) / denominator
    return pooled.transpose(1, 2).reshape(batch, dim, height, width)


class DINOiser(nn.Module):
    """The convolution g: R^d -> R^d' (d' = 64) whose feature cosines predict DINO affinities
    (the ``paper`` head: g reads the final MaskCLIP features it pools)."""

    head = "paper"
    block: int | None = None  # g reads the final features, not a block's tokens
    has_foreground = False

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


PUBLISHED_KEYS = ("obj_proj.weight", "obj_proj.bias", "bkg_decoder.weight", "bkg_decoder.bias")
PUBLISHED_BLOCK = -3
PUBLISHED_D_OUT = 256
PUBLISHED_POOLING_EPS = 1e-6


class ClipDINOiserHead(nn.Module):
    """The ``published`` head: CLIP-DINOiser's released layout (``obj_proj``, ``bkg_decoder``).

    ``affinity`` and ``foreground`` read the patch tokens ``(B, width, h, w)`` of block
    ``block`` (after its ``ln_2``); ``forward`` pools the final MaskCLIP features with the
    cosines of ``obj_proj`` (Eq. 1-2). ``has_foreground`` is False for a head trained here
    (its background decoder is not fitted), True for the released checkpoint.
    """

    head = "published"

    def __init__(
        self,
        width: int = 768,
        d_out: int = PUBLISHED_D_OUT,
        block: int = PUBLISHED_BLOCK,
        has_foreground: bool = True,
    ):
        super().__init__()
        self.width, self.d_out, self.block = width, d_out, block
        self.has_foreground = has_foreground
        self.obj_proj = nn.Conv2d(width, d_out, 3, padding=1, padding_mode="replicate")
        self.bkg_decoder = nn.Conv2d(width, 1, 1)

    def affinity(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cosines of ``obj_proj`` on block tokens ``(B, width, h, w)`` (Eq. 2)."""
        return cosine_affinity(self.obj_proj(tokens.to(self.obj_proj.weight.dtype)))

    def foreground(self, tokens: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``(B, h, w)``: sigmoid of ``bkg_decoder`` on the
        L2-normalised tokens (a distilled FOUND saliency)."""
        if not self.has_foreground:
            raise ValueError(
                "this DINOiser head has no fitted background decoder: the FOUND background "
                f"needs the published CLIP-DINOiser checkpoint (checkpoints/last.pt, {CLIP_DINOISER_URL})"
            )
        unit = F.normalize(tokens.to(self.bkg_decoder.weight.dtype), dim=1)
        return torch.sigmoid(self.bkg_decoder(unit))[:, 0]

    def forward(
        self, features: torch.Tensor, tokens: torch.Tensor, gamma: float = 0.2
    ) -> torch.Tensor:
        """Final features ``(B, d, h, w)`` pooled with the affinities of ``tokens`` (Eq. 1)."""
        return guided_pooling(features, self.affinity(tokens), gamma, PUBLISHED_POOLING_EPS)


AnyDINOiser = DINOiser | ClipDINOiserHead


def load_published_head(path: str | Path) -> ClipDINOiserHead:
    """CLIP-DINOiser's ``last.pt`` (``{"epoch", "model_state_dict"}`` with exactly
    :data:`PUBLISHED_KEYS`), loaded with ``weights_only=True``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or sorted(state) != sorted(PUBLISHED_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path}: not a CLIP-DINOiser checkpoint (expected model_state_dict with "
            f"{', '.join(PUBLISHED_KEYS)}; found {found})"
        )
    d_out, width, kh, kw = state["obj_proj.weight"].shape
    if (kh, kw) != (3, 3) or tuple(state["bkg_decoder.weight"].shape) != (1, width, 1, 1):
        raise ValueError(f"{path}: obj_proj must be a 3x3 conv and bkg_decoder a 1x1 conv to 1")
    head = ClipDINOiserHead(width, d_out)
    head.load_state_dict({key: value.float() for key, value in state.items()})
    return head.eval().requires_grad_(False)


def save_published_head(head: ClipDINOiserHead, path: str | Path, epoch: int = 0) -> None:
    """Write ``head`` in the released ``last.pt`` layout (tests, sharing a trained head)."""
    state = {key: value.detach().cpu() for key, value in head.state_dict().items()}
    torch.save({"epoch": epoch, "model_state_dict": state}, path)


def save_dinoiser(model: AnyDINOiser, path: str | Path, backbone: str | None = None) -> None:
    """Either head as safetensors, its kind, shape and the CLIP it was trained on
    (``backbone``, :func:`insight.models.backbone.backbone_identity`) in the metadata."""
    metadata = {"head": model.head, "d_out": str(model.d_out)}
    if backbone:
        metadata["backbone"] = backbone
    if isinstance(model, ClipDINOiserHead):
        metadata |= {
            "width": str(model.width),
            "block": str(model.block),
            "has_foreground": str(model.has_foreground).lower(),
        }
    else:
        metadata["d_in"] = str(model.d_in)
    save_safetensors(dict(model.state_dict()), path, metadata=metadata)


def recorded_backbone(path: str | Path) -> str | None:
    """The CLIP a head file says it was trained on (None: a released ``.pt``, which records
    none, or an older file)."""
    if Path(path).suffix in (".pt", ".pth"):
        return None
    return safetensors_metadata(path).get("backbone")


def load_dinoiser(path: str | Path) -> AnyDINOiser:
    """A head from our safetensors file, or the released ``.pt`` checkpoint."""
    if Path(path).suffix in (".pt", ".pth"):
        return load_published_head(path)
    tensors, metadata = load_safetensors(path)
    model: AnyDINOiser
    if metadata.get("head") == "published":
        d_out, width = tensors["obj_proj.weight"].shape[:2]
        model = ClipDINOiserHead(
            width, d_out, int(metadata["block"]), metadata["has_foreground"] == "true"
        )
    else:
        d_out, d_in = tensors["g.weight"].shape[:2]
        model = DINOiser(d_in, d_out)
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False)
