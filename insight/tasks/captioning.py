"""Captioning from concept tokens (Sec. 4.3, App. B.6): the stage's entry points (token caching, training, scoring)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from insight.core.io import write_json
from insight.core.logs import progress
from insight.core.sections import CaptioningSettings
from insight.data.batches import decoded_batches
from insight.data.images import ImageRef
from insight.models.backbone import (
    patch_grid,
)
from insight.models.frozen import FrozenModels
from insight.sae.model import MatryoshkaBatchTopKSAE

CAPTION_SPLITS = ("train", "val", "test")


log = logging.getLogger(__name__)


def caption_tokens(
    split_file: str | Path,
    images_root: str | Path,
    settings: CaptioningSettings,
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Pooled 8x8 tokens of every Karpathy split, cached once for both captioners:
    ``{split}/clip`` (the DINOised backbone tokens) and ``{split}/insight`` (their SAE
    reconstruction from the thresholded codes), each ``(n, 64, d)``; and per split the image
    ids and reference captions, in the same order. Unreadable images are skipped."""
    from insight.data.benchmarks import karpathy_split
    from insight.tasks.captioner import pool_tokens

    tensors, captions = {}, {}
    for split in CAPTION_SPLITS:
        rows = karpathy_split(split_file, images_root, split, settings.images[split])
        refs = [ImageRef(image_id, path) for image_id, path, _ in rows]
        references = {image_id: sentences for image_id, _, sentences in rows}
        pooled: dict[str, list[torch.Tensor]] = {"clip": [], "insight": []}
        ids: list[str] = []
        bar = progress(len(refs), f"caption tokens ({split})", "img")
        with torch.no_grad():
            for good, pixels, bad in decoded_batches(refs, models.transform, batch_size):
                if bad:
                    log.warning("%s: skipped %d unreadable images: %s", split, len(bad), bad[:3])
                if pixels is not None:
                    x = models.transform.batch(pixels, device)
                    features = models.encoder(x)
                    grid = patch_grid(models.encoder.visual, *x.shape[-2:])
                    reconstruction = sae.decode(sae.encode(features.flatten(0, 1)))
                    pooled["clip"].append(pool_tokens(features, grid).cpu())
                    pooled["insight"].append(
                        pool_tokens(reconstruction.view_as(features), grid).cpu()
                    )
                    ids += [ref.image_id for ref in good]
                bar.update(len(good) + len(bad))
        bar.close()
        if not ids:
            raise ValueError(f"captioning: no readable images in the {split} split of {split_file}")
        for method, chunks in pooled.items():
            tensors[f"{split}/{method}"] = torch.cat(chunks)
        captions[split] = {"image_ids": ids, "captions": [references[i] for i in ids]}
    return tensors, captions


def build_captioner(language_model: str, d_in: int, settings: CaptioningSettings):
    """A fresh adapter in front of the configured GPT-2 (name or local folder)."""
    from insight.tasks.captioner import Captioner, PrefixAdapter, load_language_model

    lm, tokenizer = load_language_model(language_model)
    adapter = PrefixAdapter(
        d_in,
        lm.config.n_embd,
        queries=settings.queries,
        layers=settings.adapter_layers,
        heads=settings.adapter_heads,
    )
    return Captioner(adapter, lm), tokenizer


def captioner_record(settings: CaptioningSettings) -> dict:
    """The captioning settings saved beside a trained captioner (``adapter.json``), less
    the steering study, which does not shape the captioner."""
    record = dataclasses.asdict(settings)
    record.pop("steering")
    return record


def caption_diversity(captions: Sequence[str]) -> dict:
    """How varied a captioner's test captions are: the share of distinct captions, the
    share of the most common one, and ``collapsed`` when one caption covers most (more than
    half) of the images, which makes BLEU/CIDEr say little about the image."""
    if not captions:
        return {"distinct_fraction": 0.0, "most_common_fraction": 0.0, "collapsed": False}
    counts = Counter(captions)
    most_common = counts.most_common(1)[0][1] / len(captions)
    return {
        "distinct_fraction": len(counts) / len(captions),
        "most_common_fraction": most_common,
        "collapsed": most_common > 0.5,
    }


def train_captioning_method(
    tokens_path: str | Path,
    captions_path: str | Path,
    method: str,
    settings: CaptioningSettings,
    device: torch.device,
    out: str | Path,
) -> dict:
    """Train one captioner (``insight`` or ``clip`` tokens) on train, choose the epoch on
    val, caption test and score it; saves the adapter and the fine-tuned GPT-2 to ``out``."""
    from insight.core.io import atomic_dir, load_safetensors, read_json, save_safetensors
    from insight.tasks.captioner import caption_metrics, generate_captions, train_captioner

    tensors, _ = load_safetensors(tokens_path)
    captions = read_json(captions_path)
    torch.manual_seed(settings.seed)
    captioner, tokenizer = build_captioner(
        settings.language_model, tensors[f"train/{method}"].shape[-1], settings
    )
    captioner, history = train_captioner(
        captioner,
        tensors[f"train/{method}"],
        captions["train"]["captions"],
        tensors[f"val/{method}"],
        captions["val"]["captions"],
        tokenizer,
        settings,
        device,
    )
    test = captions["test"]
    predicted = generate_captions(captioner, tensors[f"test/{method}"], tokenizer, settings, device)
    predictions = dict(zip(test["image_ids"], predicted, strict=True))
    references = dict(zip(test["image_ids"], test["captions"], strict=True))
    metrics = {**caption_metrics(references, predictions), **caption_diversity(predicted)}
    first_references = [refs[0] for refs in test["captions"] if refs]
    metrics["reference_distinct_fraction"] = caption_diversity(first_references)[
        "distinct_fraction"
    ]
    with atomic_dir(out) as tmp:
        save_safetensors(captioner.adapter.state_dict(), tmp / "adapter.safetensors")
        captioner.language_model.save_pretrained(tmp / "language_model")
        tokenizer.save_pretrained(tmp / "language_model")
        write_json(
            {"d_in": tensors[f"train/{method}"].shape[-1], **captioner_record(settings)},
            tmp / "adapter.json",
        )
    examples = [{"image_id": i, "caption": predictions[i]} for i in test["image_ids"][:10]]
    return {"method": method, **metrics, "history": history, "examples": examples}
