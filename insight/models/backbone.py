"""The CLIP backbone: loading open_clip models and MaskCLIP dense patch features.

Sec. 3.1 / App. B.1. Dense features follow MaskCLIP as CLIP-DINOiser implements it: the
tokens entering the last residual block take the *value path* of its attention (value
projection, out projection) instead of attention, then the block's residual and MLP,
then ``ln_post`` and ``proj`` on every patch token. The result is one d-dim vector per
patch (d = 512 for ViT-B/16), in CLIP's joint space.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from insight.core.sections import BackboneSettings
from insight.core.settings import clip_identity, from_settings

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


@functools.cache
def open_clip_models():
    """The ``open_clip`` module with the project's model configs registered. Imported on
    first use, not with this module: open_clip pulls in torchvision and transformers
    (about 3 s), which jobs that find their dataset absent never need."""
    import open_clip

    for config in sorted(MODEL_CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(config)
    return open_clip


RANDOM_INIT_SEED = 0


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not available locally (the machine is offline)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which CLIP to load: an open_clip model name with a pretrained tag, or a local file.

    ``pretrained`` is an open_clip tag (``laion2b_s34b_b88k``, ``openai``), ``checkpoint``
    a local weights file (takes precedence; clusters are often offline), and both empty
    means random initialisation (tests and the offline demo only).
    """

    model: str = "ViT-B-16"
    pretrained: str | None = "laion2b_s34b_b88k"
    checkpoint: str | None = None
    cache_dir: str | None = None

    @property
    def name(self) -> str:
        source = self.checkpoint or self.pretrained or "random-init"
        return f"{self.model}/{source}"


def load_clip(
    spec: BackboneSpec, device: torch.device | str = "cpu"
) -> tuple[nn.Module, object, object]:
    """Load ``(model, preprocess, tokenizer)`` in eval mode with frozen parameters.

    A missing weight raises :class:`MissingWeightsError` naming the file to download and
    the config keys that point to it.
    """
    open_clip = open_clip_models()
    if spec.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.model!r} (backbone.model)")
    pretrained = spec.checkpoint or spec.pretrained or None
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise MissingWeightsError(
            f"backbone.checkpoint {spec.checkpoint} does not exist: download the weights of "
            f"{spec.model} (e.g. open_clip_pytorch_model.bin from the model's Hugging Face hub page) "
            "and set backbone.checkpoint to the local file"
        )
    try:
        with torch.random.fork_rng(devices=[]):
            # random initialisation (tests, demo) is seeded, so every job builds the same model
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, cache_dir=spec.cache_dir, device=device
            )
    except Exception as err:  # open_clip raises several types when a download fails offline
        if spec.checkpoint or not spec.pretrained:
            raise
        raise MissingWeightsError(
            f"could not load pretrained weights {spec.model}/{spec.pretrained} ({type(err).__name__}: {err}). "
            "This machine may be offline: on a machine with internet run "
            f"`python -c \"import open_clip; open_clip.create_model('{spec.model}', pretrained='{spec.pretrained}', "
            f"cache_dir='{spec.cache_dir or '~/.cache/open_clip'}')\"`, copy the cache folder here and set "
            "backbone.cache_dir, or download the checkpoint file and set backbone.checkpoint"
        ) from err
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.model)
    return model, preprocess, tokenizer


def offline_hub() -> None:
    """Forbid hub downloads (tests and demo): a missing weight then fails fast."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def patch_grid(visual: nn.Module, height: int, width: int) -> tuple[int, int]:
    patch_h, patch_w = visual.patch_size
    return height // patch_h, width // patch_w


def _positional_embedding(visual: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """The class + patch positional embedding, bicubically resized when ``grid`` differs."""
    pos = visual.positional_embedding
    native = visual.grid_size
    if tuple(grid) == tuple(native):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, native[0], native[1], -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([cls_pos, patch_pos], dim=0)


def check_supported(visual: nn.Module) -> None:
    """MaskCLIP needs open_clip's standard ViT (token pooling, MultiheadAttention blocks)."""
    if not hasattr(visual, "transformer") or not hasattr(visual.transformer, "resblocks"):
        raise TypeError(f"{type(visual).__name__} is not an open_clip VisionTransformer")
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError("MaskCLIP dense features need a ViT without attentional pooling")
    if not isinstance(visual.transformer.resblocks[-1].attn, nn.MultiheadAttention):
        raise TypeError("MaskCLIP dense features need nn.MultiheadAttention blocks")


def last_block_input(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """Tokens ``(B, 1 + h*w, width)`` entering the last residual block (batch first) and
    the patch grid; positional embeddings are interpolated for non-native sizes."""
    grid = patch_grid(visual, images.shape[-2], images.shape[-1])
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + _positional_embedding(visual, grid).to(x.dtype)
    x = visual.ln_pre(x)
    transformer = visual.transformer
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks[:-1]:
        x = block(x)
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    return x, grid


QKV = (
    "query",
    "key",
    "value",
)  # the order of the packed in-projection (nn.MultiheadAttention, timm)


def block_projection(block: nn.Module, tokens: torch.Tensor, which: str) -> torch.Tensor:
    """``W ln_1(x) + b`` for one of the block's attention projections (``which`` in
    :data:`QKV`), per token: ``(B, N, width)`` -> ``(B, N, width)``."""
    attn: nn.MultiheadAttention = block.attn
    width = tokens.shape[-1]
    rows = slice(QKV.index(which) * width, (QKV.index(which) + 1) * width)
    return F.linear(block.ln_1(tokens), attn.in_proj_weight[rows], attn.in_proj_bias[rows])


def last_block_projection(visual: nn.Module, images: torch.Tensor, which: str) -> torch.Tensor:
    """The last block's ``query``, ``key`` or ``value`` projection of every patch token,
    ``(B, width, h, w)``: what a DINO teacher's affinities are computed from."""
    x, grid = last_block_input(visual, images)
    out = block_projection(visual.transformer.resblocks[-1], x[:, 1:], which)
    return out.transpose(1, 2).reshape(x.shape[0], -1, *grid)


def maskclip_features(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """MaskCLIP dense features ``(B, d, h, w)`` of normalised images ``(B, 3, H, W)``.

    Blocks 1..L-1 run as usual; in block L the attention is replaced by its value path:
    ``v = W_v ln_1(x) + b_v``, ``x' = x + ls_1(out_proj(v))``, ``x'' = x' + ls_2(mlp(ln_2(x')))``,
    then ``ln_post`` and ``@ proj`` per patch token (class token dropped). Input sizes
    other than the model's native size interpolate the positional embedding.
    """
    return maskclip_head(visual, *last_block_input(visual, images))


def maskclip_head(visual: nn.Module, x: torch.Tensor, grid: tuple) -> torch.Tensor:
    """The last block's value path of :func:`maskclip_features` on the tokens entering it,
    ``(B, 1 + h*w, width)`` batch first, as :func:`last_block_input` gives them."""
    x = x[:, 1:]  # the value path is per token: the class token no longer matters
    last = visual.transformer.resblocks[-1]
    x = x + last.ls_1(last.attn.out_proj(block_projection(last, x, "value")))
    x = x + last.ls_2(last.mlp(last.ln_2(x)))
    x = visual.ln_post(x)
    if visual.proj is not None:
        x = x @ visual.proj
    return x.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])


def maskclip_with_block_tokens(
    visual: nn.Module, images: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskCLIP features ``(B, d, h, w)`` and, from the same forward pass, the patch tokens
    ``(B, width, h, w)`` leaving ``ln_2`` of residual block ``block`` (class token dropped):
    the input of CLIP-DINOiser's published head (block -3)."""
    blocks = visual.transformer.resblocks
    if not -len(blocks) <= block < len(blocks) or block % len(blocks) == len(blocks) - 1:
        raise ValueError(f"block {block}: the head must read a block before the last")
    captured: list[torch.Tensor] = []
    hook = blocks[block].ln_2.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        dense = maskclip_features(visual, images)
    finally:
        hook.remove()
    tokens = captured[0] if visual.transformer.batch_first else captured[0].transpose(0, 1)
    tokens = tokens[:, 1:].transpose(1, 2)
    return dense, tokens.reshape(tokens.shape[0], tokens.shape[1], *dense.shape[-2:])


def image_size(visual: nn.Module) -> tuple[int, int]:
    return tuple(visual.image_size)  # type: ignore[return-value]


def embedding_dim(visual: nn.Module) -> int:
    return int(visual.output_dim)


def backbone_identity(spec: BackboneSpec) -> str:
    """The CLIP a DINOiser head records (:func:`insight.core.settings.clip_identity`)."""
    return clip_identity(spec.model, spec.pretrained, spec.checkpoint)


def backbone_spec(settings: BackboneSettings) -> BackboneSpec:
    """The :class:`BackboneSpec` of the ``backbone`` settings."""
    return from_settings(BackboneSpec, settings)
