"""Image classification with sparse linear probes on pooled concepts (Sec. 4.2, App. B.5): the stage's entry points."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from insight.core.logs import progress
from insight.core.sections import ClassificationSettings
from insight.data.batches import decoded_batches
from insight.data.images import ImageRef
from insight.models.backbone import (
    BackboneSpec,
)
from insight.models.frozen import FrozenModels
from insight.models.prompts import class_text_embeddings
from insight.models.text import cached_text_encoder
from insight.naming.names import concept_names
from insight.sae.model import MatryoshkaBatchTopKSAE

log = logging.getLogger(__name__)

PROBE_METHODS = ("insight", "insight_thresholded", "insight_dense")


def classification_vectors(
    pairs: Sequence[tuple[str, int]],
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    batch_size: int = 32,
) -> pa.Table:
    """Image-level vectors for the probes (cached once, not recomputed per epoch):
    ``insight`` = [max ; mean] of the image's BatchTopK codes (BatchTopK over its own
    patches), ``insight_thresholded`` = the same of the thresholded codes, ``insight_dense``
    = the same of the dense ReLU pre-activations (the release's ``use_threshold=False``
    probe features: no sparsity at all), ``clip`` = the CLIP image embedding (the
    linear-probe and zero-shot baselines)."""
    from insight.tasks.probe import pool_concepts

    model, encoder, transform = models.model, models.encoder, models.transform
    refs = [ImageRef(path, path) for path, _ in pairs]
    label_of = {path: label for path, label in pairs}
    rows: dict[str, list] = {
        "image_id": [],
        "label": [],
        "insight": [],
        "insight_thresholded": [],
        "insight_dense": [],
        "clip": [],
    }
    bar = progress(len(refs), "classification vectors", "img")
    with torch.no_grad():
        for good, pixels, bad in decoded_batches(refs, transform, batch_size):
            if bad:
                log.warning(
                    "skipped %d unreadable images: %s", len(bad), [b["path"] for b in bad][:3]
                )
            if pixels is not None:
                x = transform.batch(pixels, device)
                features = encoder(x)
                clip = model.visual(x)
                for ref, patches, embedding in zip(good, features, clip, strict=True):
                    rows["image_id"].append(ref.image_id)
                    rows["label"].append(label_of[ref.path])
                    rows["insight"].append(
                        pool_concepts(sae.encode_batch_topk(patches)).cpu().numpy()
                    )
                    rows["insight_thresholded"].append(
                        pool_concepts(sae.encode(patches)).cpu().numpy()
                    )
                    dense = torch.relu(sae.pre_activations(patches))
                    rows["insight_dense"].append(pool_concepts(dense).cpu().numpy())
                    rows["clip"].append(embedding.float().cpu().numpy())
            bar.update(len(good) + len(bad))
    bar.close()
    columns = {
        "image_id": pa.array(rows["image_id"], pa.string()),
        "label": pa.array(rows["label"], pa.int32()),
    }
    for name in (*PROBE_METHODS, "clip"):
        matrix = np.stack(rows[name]).astype(np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(
            pa.array(matrix.reshape(-1)), matrix.shape[1]
        )
    return pa.table(columns)


def classification_results(
    name: str,
    train: pa.Table,
    test: pa.Table,
    class_names: list[str],
    models: FrozenModels,
    spec: BackboneSpec,
    settings: ClassificationSettings,
    cache_dir: str | Path,
    device: torch.device,
    names_path: str | Path | None = None,
) -> tuple[list[dict], dict]:
    """Table rows (method, dataset, top1, top5, nonzero weights per class) for the probes
    on INSIGHT concepts (both variants) and on the CLIP embedding, plus zero-shot CLIP;
    and explanations of the first test images by the INSIGHT probe.

    ``settings.pooling`` picks [max ; mean] (App. B.5) or max alone (the release) from the
    cached vectors; ``settings.l1_scale`` and ``settings.bias`` go to the probe; with
    ``settings.refit`` (the release) the chosen probe is retrained on train + validation."""
    from insight.tasks.probe import accuracy, explain, refit, select_pooling, sweep

    def matrix(table: pa.Table, column: str) -> torch.Tensor:
        vectors = torch.from_numpy(
            np.stack(table[column].to_numpy(zero_copy_only=False)).astype(np.float32)
        )
        if column == "clip":
            return vectors
        return select_pooling(vectors, vectors.shape[1] // 2, settings.pooling)

    y_train = torch.from_numpy(train["label"].to_numpy().astype(np.int64))
    y_test = torch.from_numpy(test["label"].to_numpy().astype(np.int64))
    n_classes = len(class_names)
    rows, probes = [], {}
    for method in (*PROBE_METHODS, "clip"):
        probe, trials = sweep(
            matrix(train, method),
            y_train,
            n_classes,
            settings.batch_sizes,
            settings.lrs,
            settings.l1s,
            settings.epochs,
            settings.holdout_fraction,
            l1_scale=settings.l1_scale,
            use_bias=settings.bias,
        )
        if settings.refit:
            probe = refit(probe, matrix(train, method), y_train, n_classes)
        logits = probe.logits(matrix(test, method))
        probes[method] = probe
        rows.append(
            {
                "method": "linear_probe_clip" if method == "clip" else method,
                "dataset": name,
                "top1": accuracy(logits, y_test, 1),
                "top5": accuracy(logits, y_test, 5),
                "nonzero_per_class": probe.nonzero_per_class(),
                "settings": probe.settings,
            }
        )
        log.info("%s %s: %s (sweep: %s)", name, method, rows[-1], trials)
    text_encoder = cached_text_encoder(models.model, models.tokenizer, spec, cache_dir, device)
    text = torch.from_numpy(class_text_embeddings(class_names, text_encoder.encode))
    zero_shot = torch.nn.functional.normalize(matrix(test, "clip"), dim=-1) @ text.T
    rows.append(
        {
            "method": "zero_shot_clip",
            "dataset": name,
            "top1": accuracy(zero_shot, y_test, 1),
            "top5": accuracy(zero_shot, y_test, 5),
            "nonzero_per_class": None,
            "settings": {},
        }
    )
    names = concept_names(names_path)
    explanations = {}
    x_test = matrix(test, "insight")
    m = test.schema.field("insight").type.list_size // 2  # concepts
    for i in range(min(settings.explain_images, len(test))):
        result = explain(probes["insight"], x_test[i])
        result["class"] = class_names[result["class"]]
        # feature f is concept f % m, pooled by max (f < m) or mean (f >= m)
        result["concepts"] = [
            {"concept": f % m, "pool": "max" if f < m else "mean", "name": names.get(f % m)}
            for f in result.pop("features")
        ]
        explanations[test["image_id"][i].as_py()] = result
    return rows, explanations


def classification_heatmaps(
    explanations: dict,
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    folder: str | Path,
) -> None:
    """For each explained image (keyed by path): ``{folder}/{i:03d}.png`` with the image and
    the heatmaps of its top concepts (the BatchTopK codes the probe saw), titled with the
    concept's name, pooling and share of the logit; the file name goes in ``figure``."""
    from insight.views.heatmaps import concept_label, heatmap_figure, image_codes

    Path(folder).mkdir(parents=True, exist_ok=True)
    for i, (path, result) in enumerate(explanations.items()):
        with Image.open(path) as image:
            crop, _, codes, grid = image_codes(
                image, models.encoder, models.transform, sae, device, batch_topk=True
            )
        panels = [
            (
                f"{concept_label(item['concept'], item['name'])} ({item['pool']}) {share:.0%}",
                codes[:, item["concept"]].reshape(grid).cpu().numpy(),
            )
            for item, share in zip(result["concepts"], result["shares"], strict=True)
        ]
        result["figure"] = f"{i:03d}.png"
        heatmap_figure(
            crop,
            panels,
            Path(folder) / result["figure"],
            f"predicted '{result['class']}' (logit {result['logit']:.2f})",
        )
