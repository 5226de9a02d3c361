"""Interpretability metrics (App. A.1): patch footprints vs pixel masks.

Generates part label maps (blocky parts, background, ignored pixels) and sparse patch
codes, then in one process scores Locality, Consistency and Impurity with the stage
(``InterpretabilityAccumulator.add_patches``: each patch's pixel counts per label) and
with the metrics as App. A.1 writes them: every concept's map upsampled (nearest) to the
label map's pixels, IoU and label shares summed over pixels. Checks the two agree.

    python benchmarks/interpretability.py [--images 16 --height 240 --width 320 --m 1024 --k 12]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine, report

from insight.tasks.interpretability import (
    IGNORE_INDEX,
    InterpretabilityAccumulator,
    upsample_nearest,
)


def pixel_metrics(
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    labels: list[int],
    background: int,
    grid: tuple[int, int],
) -> dict:
    """Locality, Consistency and Impurity on upsampled pixel masks (Eq. A.1-A.5)."""
    locality: dict[int, list[float]] = {}
    pair: dict[tuple[int, int], list[float]] = {}
    entropy: dict[int, list[float]] = {}
    for concepts, patch_masks, label_map in images:
        height, width = label_map.shape
        masks = upsample_nearest(patch_masks.reshape(len(concepts), *grid), height, width)
        valid = label_map != IGNORE_INDEX
        masks = masks[:, valid].astype(np.float64)
        pixels = label_map[valid]
        fired = masks.sum(1) > 0
        concepts, masks = concepts[fired], masks[fired]
        present = [label for label in labels if (pixels == label).any()]
        if present and len(concepts):
            label_masks = np.stack([pixels == label for label in present]).astype(np.float64)
            intersection = masks @ label_masks.T
            union = masks.sum(1)[:, None] + label_masks.sum(1)[None] - intersection
            iou = intersection / union
            for j, label in enumerate(present):
                locality.setdefault(label, []).append(float(iou[:, j].max()))
                for i, concept in enumerate(concepts):
                    pair.setdefault((int(concept), label), []).append(float(iou[i, j]))
        shares = np.stack([masks[:, pixels == c].sum(1) for c in [*labels, background]], 1)
        for i, concept in enumerate(concepts):
            p = shares[i] / shares[i].sum()
            p = p[p > 0]
            entropy.setdefault(int(concept), []).append(float(-(p * np.log(p)).sum()))
    best: dict[int, float] = {}
    for (_, label), values in pair.items():
        best[label] = max(best.get(label, 0.0), float(np.mean(values)))
    return {
        "locality": float(np.mean([np.mean(v) for v in locality.values()])),
        "consistency": float(np.mean(list(best.values()))),
        "impurity": float(np.mean([np.mean(v) for v in entropy.values()])),
    }


def generate(
    images: int, height: int, width: int, grid: tuple[int, int], m: int, k: int, parts: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: active concept ids, their (C, h*w) patch masks, an (H, W) label map."""
    rng = np.random.default_rng(0)
    result = []
    for _ in range(images):
        label_map = np.full((height, width), parts, np.uint8)  # background
        for _ in range(6):
            y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
            label_map[y : y + rng.integers(20, 120), x : x + rng.integers(20, 120)] = rng.integers(
                parts
            )
        label_map[rng.random((height, width)) < 0.01] = IGNORE_INDEX
        codes = np.zeros((grid[0] * grid[1], m), bool)
        for patch in range(len(codes)):
            codes[patch, rng.choice(m, size=k, replace=False)] = True
        active = np.flatnonzero(codes.any(0))
        result.append((active, codes[:, active].T, label_map))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--grid", type=int, default=14, help="patches per side")
    parser.add_argument("--m", type=int, default=1024)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--parts", type=int, default=40, help="as PartImageNet")
    args = parser.parse_args()
    grid = (args.grid, args.grid)
    images = generate(args.images, args.height, args.width, grid, args.m, args.k, args.parts)
    labels = list(range(args.parts))

    start = time.perf_counter()
    accumulator = InterpretabilityAccumulator(labels, args.parts, min_images=1)
    for concepts, patch_masks, label_map in images:
        accumulator.add_patches(concepts, patch_masks, grid, label_map)
    project = {k: accumulator.summary()[k] for k in ("locality", "consistency", "impurity")}
    project_s = time.perf_counter() - start

    start = time.perf_counter()
    baseline = pixel_metrics(images, labels, args.parts, grid)
    baseline_s = time.perf_counter() - start

    agree = all(np.isclose(project[k], baseline[k], rtol=1e-9) for k in project)
    print(f"project {project_s:.2f} s, pixel masks {baseline_s:.2f} s, agree={agree}")
    report(
        {
            "stage": "interpretability",
            "baseline": "App. A.1 on concept maps upsampled to the label map's pixels",
            "images": args.images,
            "label_map": [args.height, args.width],
            "grid": list(grid),
            "m": args.m,
            "k": args.k,
            "project_images_per_s": round(args.images / project_s, 2),
            "baseline_images_per_s": round(args.images / baseline_s, 2),
            "ratio": round(baseline_s / project_s, 3),
            "same_metrics": bool(agree),
            "project": project,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
