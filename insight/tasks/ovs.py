"""Open-vocabulary segmentation evaluation with three methods in one pass (Sec. 4.4).

For every image (resized to the protocol size, cut into 448-pixel windows with stride
224) the DINOised patch features of a window are computed once and scored by three
methods, each against the class text embeddings (80 ImageNet templates, Eq. B.11 with a
single template set), as ``logit_scale * cos``:

- ``clip_dinoiser``: the DINOised features themselves (the opaque baseline);
- ``insight``: their SAE reconstruction with BatchTopK over the window's patches;
- ``insight_thresholded``: their reconstruction from the batch-independent
  thresholded codes.

Each window gives ``softmax(logit_scale * cos)`` at feature resolution (the release's
``cls_seg``; ``window_scores: logits`` keeps ``logit_scale * cos``), resized bilinearly to
the window; windows are averaged, resized to the image's original size and argmaxed.
Background (datasets whose class 0 is background): ``prompt`` scores a "background" prompt
like any class; ``threshold`` predicts background where the largest class probability is
below ``threshold``; ``found`` (CLIP-DINOiser's FOUND rule, with the published head): as
released (``found_at: window``) "background" stays class 0 and, in each window before
upsampling, gets probability 1 where the best probability is below 0.99 and the head's
foreground score is not above 0.5; with ``found_at: image`` the rule is applied once after
averaging, background not scored. ``auto`` is what the release does: ``found`` on VOC and
COCO-Object when the head has a background decoder, ``prompt`` elsewhere (Context-60 scores
"background" like any class).

The short side is 448 on every benchmark (CLIP-DINOiser's protocol) or, with
``short_side: release``, the released configs' 512 for ADE20K and COCO-Stuff and 1024
for Cityscapes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from insight.core.io import read_label_map, write_json
from insight.core.logs import progress
from insight.core.sections import OVSSettings
from insight.core.settings import from_settings
from insight.data.batches import BatchTransform
from insight.data.benchmarks import OVSDataset, benchmark, list_pairs
from insight.models.backbone import (
    patch_grid,
)
from insight.models.dense import DenseEncoder
from insight.models.frozen import FrozenSpec, load_frozen
from insight.models.prompts import (
    class_text_embeddings,
)
from insight.models.text import cached_text_encoder
from insight.naming.names import concept_names
from insight.sae.model import MatryoshkaBatchTopKSAE, load_sae
from insight.tasks.ovs_explain import explain_image, explanation_figure, save_prediction_png
from insight.tasks.segmentation import (
    IoUAccumulator,
    chance_miou,
    resize_to_protocol,
    slide_inference,
)

METHODS = ("clip_dinoiser", "insight", "insight_thresholded")
BACKGROUND_RULES = ("auto", "prompt", "threshold", "found")
FOUND_BENCHMARKS = ("voc", "coco_object")  # where the release applies FOUND
RELEASE_SHORT_SIDE = {"ade20k": 512, "coco_stuff": 512, "cityscapes": 1024}


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OVSConfig:
    short_side: int | str = 448  # or "release": per benchmark (RELEASE_SHORT_SIDE)
    long_max: int = 2048
    window: int = 448
    stride: int = 224
    logit_scale: float = 100.0
    background: str = "auto"  # one of BACKGROUND_RULES
    background_threshold: float = 0.5
    found_confidence: float = 0.99
    found_foreground: float = 0.5
    found_at: str = "window"  # or "image": the rule after averaging, at full resolution
    window_scores: str = "probabilities"  # or "logits"
    class_names: str = "release"  # or "readable"
    max_images: int | None = None


def protocol_short_side(benchmark_name: str, setting: int | str) -> int:
    """The short side a benchmark's images are resized to: ``setting`` itself, or 448
    except where the released configs use 512 (ADE20K, COCO-Stuff) or 1024 (Cityscapes)."""
    if setting == "release":
        return RELEASE_SHORT_SIDE.get(benchmark_name, 448)
    return int(setting)


def background_rule(dataset: OVSDataset, setting: str, has_foreground: bool) -> str:
    """The background rule a benchmark is scored with (``none`` without a background class);
    ``auto`` applies FOUND only where the release does."""
    if setting not in BACKGROUND_RULES:
        raise ValueError(f"ovs.background must be one of {BACKGROUND_RULES}, not {setting!r}")
    if not dataset.background:
        return "none"
    if setting == "auto":
        return "found" if dataset.name in FOUND_BENCHMARKS and has_foreground else "prompt"
    if setting == "found" and not has_foreground:
        raise ValueError(
            "ovs.background: found needs the published CLIP-DINOiser head "
            "(dinoiser.head: published with dinoiser.checkpoint)"
        )
    return setting


def resolved_protocol(config: OVSConfig, dataset: OVSDataset, has_foreground: bool) -> OVSConfig:
    """``config`` with this benchmark's short side and background rule filled in."""
    background = background_rule(dataset, config.background, has_foreground)
    if background == "found" and config.found_at == "window" and config.window_scores == "logits":
        raise ValueError(
            "ovs.found_at: window marks background in each window's probabilities; "
            "it needs ovs.window_scores: probabilities (or found_at: image)"
        )
    return dataclasses.replace(
        config,
        short_side=protocol_short_side(dataset.name, config.short_side),
        background=background,
    )


def found_background(
    probabilities: torch.Tensor,
    foreground: torch.Tensor,
    confidence: float = 0.99,
    foreground_threshold: float = 0.5,
) -> torch.Tensor:
    """FOUND's rule: pixels whose best class probability ``(C, H, W)`` is below
    ``confidence`` and whose foreground score ``(H, W)`` is not above the threshold
    (CLIP-DINOiser: ``uncertain & ~(found > 0.5)``)."""
    return (probabilities.max(0).values < confidence) & ~(foreground > foreground_threshold)


def method_embeddings(
    features: torch.Tensor, sae: MatryoshkaBatchTopKSAE | None
) -> dict[str, torch.Tensor]:
    """Patch embeddings ``(N, d)`` per method (the SAE rows are skipped without an SAE)."""
    out = {"clip_dinoiser": features}
    if sae is not None:
        out["insight"] = sae.decode(sae.encode_batch_topk(features))
        out["insight_thresholded"] = sae.decode(sae.encode(features))
    return out


def scored_classes(dataset: OVSDataset, config: OVSConfig) -> list[str]:
    """The classes given a text embedding: all of them, background included, except under
    the ``threshold`` rule and FOUND applied to the whole image (``found_at: image``)."""
    if dataset.background and (
        config.background == "threshold"
        or (config.background == "found" and config.found_at == "image")
    ):
        return list(dataset.classes[1:])
    return list(dataset.classes)


def window_scores(
    cos: torch.Tensor, foreground: torch.Tensor | None, config: OVSConfig
) -> torch.Tensor:
    """One window's class scores ``(1, C, h, w)`` at feature resolution, before any
    upsampling: ``logit_scale * cos``, or with ``window_scores: probabilities`` the
    release's ``softmax(logit_scale * cos)`` (MaskCLIP's ``cls_seg``). With FOUND per
    window (``found_at: window``, the release) class 0 is the scored "background" and
    its probability becomes 1 where :func:`found_background` holds."""
    scores = config.logit_scale * cos
    if config.window_scores == "logits":
        return scores
    scores = scores.softmax(1)
    if foreground is not None and config.found_at == "window":
        background = found_background(
            scores[0], foreground[0], config.found_confidence, config.found_foreground
        )
        scores[0, 0][background] = 1.0
    return scores


def as_probabilities(scores: torch.Tensor, config: OVSConfig) -> torch.Tensor:
    """Averaged class scores ``(C, H, W)`` as probabilities: as they are when windows gave
    probabilities, their softmax when they gave logits."""
    return scores if config.window_scores == "probabilities" else scores.softmax(0)


@torch.no_grad()
def predict(
    image: Image.Image,
    encoder: DenseEncoder,
    transform: BatchTransform,
    text: torch.Tensor,
    sae: MatryoshkaBatchTopKSAE | None,
    dataset: OVSDataset,
    config: OVSConfig,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Label maps (H, W) of one image per method, in the dataset's label space."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))[None]
    x = resize_to_protocol(transform.batch(pixels, device), config.short_side, config.long_max)
    methods = [m for m in METHODS if sae is not None or m == "clip_dinoiser"]
    n_classes = text.shape[0]
    found = config.background == "found"
    found_on_image = found and config.found_at == "image"

    def window_output(crop: torch.Tensor) -> torch.Tensor:
        batch_features, foreground = encoder.features_and_foreground(crop, found)
        features = batch_features[0]  # (N, d)
        grid = patch_grid(encoder.visual, crop.shape[-2], crop.shape[-1])
        embeddings = method_embeddings(features, sae)
        maps = []
        for method in methods:
            embedding = F.normalize(embeddings[method], dim=-1)
            cos = (embedding @ text.T).T.reshape(1, n_classes, *grid)
            maps.append(window_scores(cos, foreground if found else None, config))
        if found_on_image:  # one more channel: the foreground score, slid alike
            maps.append(foreground[:, None])
        return F.interpolate(
            torch.cat(maps, dim=1), size=crop.shape[-2:], mode="bilinear", align_corners=False
        )

    channels = len(methods) * n_classes + int(found_on_image)
    scores = slide_inference(x, window_output, channels, config.window, config.stride)
    scores = F.interpolate(
        scores, size=(image.height, image.width), mode="bilinear", align_corners=False
    )
    out = {}
    for i, method in enumerate(methods):
        method_scores = scores[0, i * n_classes : (i + 1) * n_classes]
        prediction = method_scores.argmax(0)
        if config.background == "threshold":
            probability = as_probabilities(method_scores, config).max(0).values
            prediction = torch.where(probability < config.background_threshold, 0, prediction + 1)
        elif found_on_image:
            background = found_background(
                as_probabilities(method_scores, config),
                scores[0, -1],
                config.found_confidence,
                config.found_foreground,
            )
            prediction = torch.where(background, 0, prediction + 1)
        out[method] = prediction.cpu().numpy().astype(np.int64)
    return out


def evaluate(
    pairs: Sequence[tuple[str, Path, Path]],
    dataset: OVSDataset,
    encoder: DenseEncoder,
    transform: BatchTransform,
    text: torch.Tensor,
    sae: MatryoshkaBatchTopKSAE | None,
    config: OVSConfig,
    device: torch.device | str = "cpu",
    on_image: Callable[[str, dict[str, np.ndarray]], None] | None = None,
) -> dict:
    """Dataset-level IoU per method (mmseg semantics), with per-class values."""
    accumulators = {
        m: IoUAccumulator(dataset.num_classes, reduce_zero_label=dataset.reduce_zero_label)
        for m in METHODS
    }
    pairs = list(pairs)[: config.max_images] if config.max_images else list(pairs)
    for image_id, image_path, label_path in pairs:
        with Image.open(image_path) as image:
            predictions = predict(image, encoder, transform, text, sae, dataset, config, device)
        label = read_label_map(label_path)
        for method, prediction in predictions.items():
            # with reduce_zero_label, predictions already index the reduced classes
            accumulators[method].add(prediction, label)
        if on_image is not None:
            on_image(image_id, predictions)
    results = {}
    for method, accumulator in accumulators.items():
        if accumulator.images == 0:
            continue
        iou = accumulator.iou()
        results[method] = {
            "miou": accumulator.miou(),
            "per_class_iou": {
                name: (None if np.isnan(v) else float(v))
                for name, v in zip(dataset.classes, iou, strict=True)
            },
        }
    scored = [a for a in accumulators.values() if a.images]  # every method saw the same labels
    chance = chance_miou(scored[0].label_area) if scored else None
    return {"images": len(pairs), "chance_miou": chance, "methods": results}


def ovs_table(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Rows of ``ovs_table.csv``: one per method, one column per dataset (mIoU x 100, or
    ``not run`` for a dataset that was absent)."""
    datasets = list(results)
    header = ["method", *datasets]
    rows = []
    for method in METHODS:
        row = [method]
        for name in datasets:
            result = results[name]
            if result.get("status") == "not run":
                row.append("not run")
            elif method in result.get("methods", {}):
                row.append(f"{100 * result['methods'][method]['miou']:.1f}")
            else:
                row.append("")
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def evaluate_ovs(
    name: str,
    root: str | Path,
    frozen: FrozenSpec,
    sae_path: str | Path,
    settings: OVSSettings,
    cache_dir: str | Path,
    device: torch.device,
    out_dir: str | Path | None = None,
    names_path: str | Path | None = None,
) -> dict:
    """Sec. 4.4: one benchmark, the three methods in one pass (:func:`evaluate`). With
    ``out_dir``: predicted label maps as PNG (``save_predictions``) and explanation
    figures of the first ``explain_images`` images (Fig. 7)."""
    dataset = benchmark(name, settings.custom, settings.class_names)
    pairs = list_pairs(dataset, root)  # raises DatasetLayoutError naming the layout
    models = load_frozen(frozen, device)
    encoder, transform = models.encoder, models.transform
    protocol = from_settings(OVSConfig, settings)
    config = resolved_protocol(protocol, dataset, encoder.has_foreground)
    log.info("%s: short side %d, background %s", name, config.short_side, config.background)
    text_encoder = cached_text_encoder(
        models.model, models.tokenizer, frozen.backbone, cache_dir, device
    )
    classes = scored_classes(dataset, config)
    text = torch.from_numpy(class_text_embeddings(classes, text_encoder.encode)).to(device)
    sae = load_sae(sae_path).to(device)
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    bar = progress(min(len(pairs), config.max_images or len(pairs)), f"ovs {name}", "img")

    def on_image(image_id: str, predictions: dict) -> None:
        bar.update(1)
        if out is not None and settings.save_predictions:
            for method, prediction in predictions.items():
                save_prediction_png(prediction, out / "pred" / method / f"{image_id}.png")

    result = evaluate(pairs, dataset, encoder, transform, text, sae, config, device, on_image)
    bar.close()
    if out is not None and settings.explain_images:
        names = concept_names(names_path)
        explanations = {}
        for image_id, image_path, _ in pairs[: settings.explain_images]:
            with Image.open(image_path) as image:
                explanation = explain_image(
                    image, encoder, transform, text, sae, classes, config.short_side,
                    device=device, reading=settings.explanation,
                )  # fmt: skip
                explanation_figure(image, explanation, names, out / "explain" / f"{image_id}.png")
            explanations[image_id] = {k: v for k, v in explanation.items() if k != "segmentation"}
        write_json(explanations, out / "explain" / "explanations.json")
    for method, values in result["methods"].items():
        log.info("%s %s: mIoU %.4f", name, method, values["miou"])
    return {
        "dataset": name,
        "classes": list(dataset.classes),
        "settings": dataclasses.asdict(config),
        **result,
    }
