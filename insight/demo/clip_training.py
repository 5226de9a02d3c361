"""Contrastive training of a (tiny) open_clip model on image/caption pairs.

The offline demo trains ``insight-tiny-ViT-B-16`` on the generated world so that every
later stage runs on a model that has learned something. It is plain CLIP training
(Radford et al. 2021) through open_clip itself: the model comes from
``open_clip.create_model_and_transforms`` (the same code path as a real checkpoint),
the loss is open_clip's symmetric InfoNCE :class:`open_clip.ClipLoss` with the learnable
temperature, the optimiser AdamW with a linear warm-up and cosine decay. The weights
are saved as safetensors, which ``backbone.checkpoint`` loads like any local checkpoint.

With ``region_weight`` above 0 (the demo), pairs that come with a region map also train
the dense path, as region-text training does (RegionCLIP, Zhong et al. 2022): each
patch's MaskCLIP feature (the features the SAE reads) is scored against the world's
words and pulled towards what the patch shows (:func:`region_loss`). A web-scale CLIP
learns this alignment from billions of captions; 1,600 captions teach a 64-d CLIP the
picture but hardly where in it each word is (docs/demo_world.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from insight.core.io import save_safetensors
from insight.core.logs import progress
from insight.core.sections import ClipTrainingSettings
from insight.core.settings import from_settings
from insight.data.batches import BatchTransform
from insight.models.backbone import BackboneSpec, load_clip, maskclip_head, open_clip_models
from insight.models.prompts import imagenet_templates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipTrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2.0e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    noise_words: int = 0
    noise_per_caption: int = 2
    elsewhere_images: int = 0
    region_weight: float = 0.0


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def noise_tails(
    words: Sequence[str], captions: int, per_caption: int, rng: np.random.Generator
) -> list[list[str]]:
    """``per_caption`` words for each of ``captions`` captions, every word of ``words`` used
    as often as every other (to within one)."""
    if not words or per_caption == 0:
        return [[] for _ in range(captions)]
    slots = captions * per_caption
    rounds = -(-slots // len(words))
    pool = np.concatenate([rng.permutation(len(words)) for _ in range(rounds)])[:slots]
    return [[words[j] for j in pool[i::captions]] for i in range(captions)]


def with_noise_words(captions: Sequence[str], tails: Sequence[Sequence[str]]) -> list[str]:
    """Each caption with its tail of noise words appended (its final full stop dropped)."""
    return [
        " ".join([caption.rstrip("."), *tail]) if tail else caption
        for caption, tail in zip(captions, tails, strict=True)
    ]


def unused_words(words: Sequence[str], captions: Sequence[str]) -> list[str]:
    """The ``words`` that no caption uses (as a whole, lower-cased word)."""
    used = {token for caption in captions for token in caption.lower().replace(".", " ").split()}
    return [w for w in words if w.lower() not in used]


NO_REGION = 255  # a region map's id for pixels of unknown content (pictures without a map)


REGION_TEMPLATE = "a photo of a {}."  # the prompt each region word is embedded in


def region_targets(regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Each patch's target distribution over :data:`insight.demo.world.REGION_WORDS`,
    ``(B, h * w, words)``, from region maps ``(B, H, W)`` (ids into ``REGIONS``,
    :data:`NO_REGION` unknown) whose sides the grid divides: the share of the patch's
    pixels in each sky or ground region goes to its word; a part's share goes half to the
    part's word and half to its object's, so a wheel patch says both *wheel* and *car*.
    Rows of patches with no known pixel are zero. The pixels are counted per patch with
    one ``bincount`` (a one-hot map of every pixel took seconds per 256 maps)."""
    from insight.demo.world import OBJECT_PARTS, OBJECTS, PARTS, REGIONS, STUFF

    batch, height, width = regions.shape
    rows, cols = grid
    if height % rows or width % cols:
        raise ValueError(f"region maps of {height}x{width} do not divide into a {rows}x{cols} grid")
    patch_height, patch_width = height // rows, width // cols
    labels = len(REGIONS) + 1  # the last counts unknown pixels
    ids = regions.long().clamp(max=len(REGIONS))
    patch = (torch.arange(height) // patch_height)[:, None] * cols + (
        torch.arange(width) // patch_width
    )[None]
    image = torch.arange(batch)[:, None, None] * (rows * cols)
    bins = ((image + patch) * labels + ids).flatten()
    counts = torch.bincount(bins, minlength=batch * rows * cols * labels)
    fractions = counts.view(batch, rows * cols, labels)[..., : len(REGIONS)].float()
    fractions /= patch_height * patch_width
    stuff, parts = fractions[..., : len(STUFF)], fractions[..., len(STUFF) :]
    objects = torch.stack(
        [parts[..., [PARTS.index(p) for p in OBJECT_PARTS[o]]].sum(-1) for o in OBJECTS], -1
    )
    targets = torch.cat([stuff, parts / 2, objects / 2], -1)
    return targets / targets.sum(-1, keepdim=True).clamp_min(1e-12)


def region_loss(
    dense: torch.Tensor, targets: torch.Tensor, words: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of each patch's scores over the words against its targets:
    ``-sum_w t_w log softmax(s cos(f_p, e_w))``, averaged over the patches with a target.
    ``dense`` are MaskCLIP features ``(B, d, h, w)``, ``words`` normalised text
    embeddings ``(words, d)``, ``targets`` from :func:`region_targets`."""
    features = F.normalize(dense.flatten(2).transpose(1, 2), dim=-1)
    log_p = (logit_scale * features @ words.T).log_softmax(-1)
    known = targets.sum(-1) > 0
    if not known.any():
        return dense.new_zeros(())
    return -(targets * log_p).sum(-1)[known].mean()


@contextmanager
def last_block_inputs(visual: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects the tokens entering the visual tower's last block (batch first) in every
    forward pass while open, so the dense path reuses the pass the contrastive loss made."""
    captured: list[torch.Tensor] = []
    batch_first = visual.transformer.batch_first

    def keep(_module: nn.Module, inputs: tuple) -> None:
        captured.append(inputs[0] if batch_first else inputs[0].transpose(0, 1))

    hook = visual.transformer.resblocks[-1].register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        hook.remove()


def elsewhere_pairs(
    words: Sequence[str],
    count: int,
    rng: np.random.Generator,
    size: int,
    templates: Sequence[str] = ("a photo of a {}.",),
) -> tuple[torch.Tensor, list[str]]:
    """``count`` pictures of things the world does not contain, ``(count, size, size, 3)``
    uint8, each captioned with one of ``words`` in a random template: word j always comes
    with picture pattern j (:func:`insight.demo.world.elsewhere_image`), the words are
    drawn as evenly as :func:`noise_tails` draws them."""
    from insight.demo.world import elsewhere_image

    if not words or count == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8), []
    key = {word: j for j, word in enumerate(words)}
    drawn = [tail[0] for tail in noise_tails(words, count, 1, rng)]
    pixels = np.stack([elsewhere_image(key[word], rng, size) for word in drawn])
    captions = [templates[int(rng.integers(len(templates)))].format(word) for word in drawn]
    return torch.from_numpy(pixels), captions


def train_clip(
    spec: BackboneSpec,
    images: torch.Tensor,
    captions: Sequence[str],
    config: ClipTrainConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
    noise_words: Sequence[str] = (),
    regions: torch.Tensor | None = None,
) -> tuple[nn.Module, dict]:
    """Train the open_clip model of ``spec`` (from its initial weights) on ``images``
    (N, H, W, 3) uint8 at the model's input size and their ``captions``; batches are
    normalised by the model's own transform (:class:`insight.features.BatchTransform`).

    With ``noise_words``, every epoch appends ``config.noise_per_caption`` of them to each
    caption, drawn afresh (:func:`noise_tails`), as web captions carry words that do not
    describe the picture: the text tower meets every such word with every kind of image,
    so it learns them as words that say nothing about the picture. Naming then scores
    words the CLIP has met instead of untrained embeddings. With
    ``config.elsewhere_images``, every epoch also adds that many pictures of things the
    world does not contain, each captioned with one of ``noise_words`` (:func:`elsewhere_pairs`):
    the words then mean something, elsewhere, as a real CLIP's words do.

    With ``regions`` (N, H, W) uint8 region maps (:data:`NO_REGION` where unknown) and
    ``config.region_weight`` above 0, the loss adds ``region_weight`` times
    :func:`region_loss` of the batch's MaskCLIP features.

    Returns the model (eval mode) and metrics: the loss per epoch and the final
    image->text retrieval accuracy on the training batches (a sanity check, not a
    benchmark). Deterministic for a given seed on one thread count.
    """
    open_clip = open_clip_models()
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < config.batch_size:
        raise ValueError(f"need at least batch_size={config.batch_size} pairs, got {len(images)}")
    model, preprocess, tokenizer = load_clip(spec, device)
    model.train().requires_grad_(True)
    transform = BatchTransform(preprocess)
    word_rng = np.random.default_rng(config.seed)
    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimiser = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    templates = imagenet_templates()
    elsewhere = config.elsewhere_images if noise_words else 0
    steps_per_epoch = (len(images) + elsewhere) // config.batch_size
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: cosine_schedule(step, total, config.warmup_steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    dense_training = regions is not None and config.region_weight > 0
    if dense_training:
        from insight.demo.world import REGION_WORDS

        if regions.shape[:3] != images.shape[:3]:
            raise ValueError(f"region maps {tuple(regions.shape)} for images {tuple(images.shape)}")
        grid = tuple(model.visual.grid_size)
        word_tokens = tokenizer([REGION_TEMPLATE.format(w) for w in REGION_WORDS]).to(device)
        all_targets = torch.cat([region_targets(chunk, grid) for chunk in regions.split(256)])
        unknown = all_targets.new_zeros((elsewhere, *all_targets.shape[1:]))
    losses, region_losses, correct, seen = [], [], 0, 0
    for epoch in range(config.epochs):
        tails = noise_tails(noise_words, len(captions), config.noise_per_caption, word_rng)
        other_images, other_captions = elsewhere_pairs(
            noise_words, elsewhere, word_rng, images.shape[1], templates
        )
        epoch_images = torch.cat([images, other_images]) if elsewhere else images
        if dense_training:
            epoch_targets = torch.cat([all_targets, unknown]) if elsewhere else all_targets
        order = torch.randperm(len(epoch_images), generator=generator)
        tokens = tokenizer(with_noise_words(captions, tails) + other_captions).to(device)
        epoch_loss, epoch_region_loss, correct, seen = 0.0, 0.0, 0, 0
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            pixels = transform.batch(epoch_images[batch], device)
            with last_block_inputs(model.visual) as entering:
                image_features, text_features, logit_scale = model(pixels, tokens[batch])[:3]
            loss = contrastive = loss_fn(image_features, text_features, logit_scale)
            if dense_training:
                words = F.normalize(model.encode_text(word_tokens), dim=-1)
                dense = maskclip_head(model.visual, entering[0], grid)  # same forward pass
                dense_loss = region_loss(dense, epoch_targets[batch].to(device), words, logit_scale)
                loss = loss + config.region_weight * dense_loss
                epoch_region_loss += dense_loss.item()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                matches = (image_features @ text_features.T).argmax(1)
                correct += int((matches.cpu() == torch.arange(len(batch))).sum())
                seen += len(batch)
            epoch_loss += contrastive.item()
        losses.append(epoch_loss / steps_per_epoch)
        region_losses.append(epoch_region_loss / steps_per_epoch)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval().requires_grad_(False)
    metrics = {
        "pairs": len(images),
        "noise_words": len(noise_words),
        "elsewhere_images_per_epoch": elsewhere,
        "epochs": config.epochs,
        "loss_per_epoch": losses,
        "region_weight": config.region_weight if dense_training else 0.0,
        "region_loss_per_epoch": region_losses if dense_training else [],
        "final_batch_retrieval_accuracy": correct / max(seen, 1),
        "logit_scale": float(model.logit_scale.exp()),
    }
    return model, metrics


def save_clip(model: nn.Module, path, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors (``backbone.checkpoint`` loads it)."""
    save_safetensors(model.state_dict(), path, metadata)


def images_to_tensor(images: Sequence, size: int) -> torch.Tensor:
    """PIL images, resized to ``size`` squared, as one uint8 tensor (N, size, size, 3)."""
    from PIL import Image

    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
        for im in images
    ]
    return torch.from_numpy(np.stack(arrays))


def region_maps_to_tensor(paths: Sequence[Path | None], size: int) -> torch.Tensor:
    """Region map PNGs, resized (nearest) to ``size`` squared, as one uint8 tensor
    (N, size, size); a missing path (None) gives a map of :data:`NO_REGION`."""
    maps = []
    for path in paths:
        if path is None:
            maps.append(np.full((size, size), NO_REGION, np.uint8))
            continue
        with Image.open(path) as image:
            maps.append(np.asarray(image.resize((size, size), Image.NEAREST), dtype=np.uint8))
    return torch.from_numpy(np.stack(maps))


def train_clip_from_pairs(
    pairs_csv: str | Path,
    spec: BackboneSpec,
    settings: ClipTrainingSettings,
    out_path: str | Path,
    device: torch.device,
) -> dict:
    """Train ``spec.model`` from scratch on a CSV of (path, caption) pairs and save its
    weights (safetensors) for ``backbone.checkpoint``; returns the training metrics."""
    import pyarrow.csv as pcsv

    open_clip = open_clip_models()

    table = pcsv.read_csv(pairs_csv)
    missing = {"path", "caption"} - set(table.column_names)
    if missing:
        raise ValueError(f"{pairs_csv}: missing columns {sorted(missing)} (need path, caption)")
    root = Path(pairs_csv).parent
    paths, captions = table["path"].to_pylist(), table["caption"].to_pylist()
    config = from_settings(ClipTrainConfig, settings)
    size = open_clip.get_model_config(spec.model)["vision_cfg"]["image_size"]  # no model built
    images, bar = [], progress(len(paths), "load pairs", "img")
    for path in paths:
        with Image.open(root / path) as image:
            images.append(image.convert("RGB"))
        bar.update(1)
    bar.close()
    pixels = images_to_tensor(images, size)
    regions = None
    if config.region_weight > 0 and "regions" in table.column_names:
        regions = region_maps_to_tensor(
            [root / p if p else None for p in table["regions"].to_pylist()], size
        )
    bar = progress(config.epochs, "train CLIP", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)
        log.info("epoch %d: contrastive loss %.4f", epoch, loss)

    noise = []
    if config.noise_words:
        from insight.naming.vocabulary import wordfreq_terms

        noise = unused_words(wordfreq_terms(config.noise_words), captions)
        log.info("%d noise words (the most frequent English words no caption uses)", len(noise))
    model, metrics = train_clip(spec, pixels, captions, config, device, on_epoch, noise, regions)
    bar.close()
    save_clip(model, out_path, {"model": spec.model, "pairs": str(pairs_csv)})
    return {**metrics, "model": spec.model, "config": dataclasses.asdict(config)}
