"""Concept interpretability on part-annotated data: Locality, Consistency, Impurity (App. A.1).

Concept maps are the patch activations of a concept upsampled (nearest) to the label
map's size and *binarised at activation > 0* (the concept fired on that patch); label
masks are the annotated parts. Pixels labelled ``ignore_index`` (255) are left out.

- ``IoU_{c,l}(x)`` (Eq. A.1): intersection over union of concept c's and label l's masks.
- Locality (Eq. A.2): for every image and every label l present in it, the best IoU
  over concepts; averaged over the images containing l, then over labels.
- Consistency (Eq. A.3): for every (c, l), the mean IoU over the images where both are
  present; the best concept per label; averaged over labels.
- Impurity (Eq. A.4, A.5): for every image where c is active, the entropy (natural log)
  of the share of c's mask falling in each label, background included; averaged over
  those images, then over the concepts active in at least ``min_images`` images.

A nearest-upsampled map is constant over each patch's footprint, so the pipeline sums
each patch's pixel count per label (:meth:`InterpretabilityAccumulator.add_patches`)
instead of the pixels: the same numbers, about 100 times faster
(``benchmarks/interpretability.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from insight.core.io import read_label_map
from insight.core.logs import progress
from insight.core.sections import InterpretabilitySettings
from insight.models.frozen import FrozenSpec, load_frozen, squashed_input
from insight.sae.model import load_sae

IGNORE_INDEX = 255


log = logging.getLogger(__name__)


def nearest_source(size: int, cells: int) -> np.ndarray:
    """For each of ``size`` pixels along one axis, the grid cell (of ``cells``) it takes
    its value from under nearest-neighbour upsampling."""
    return np.minimum((np.arange(size) * cells) // size, cells - 1)


def upsample_nearest(grid_maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(C, h, w)`` patch maps to ``(C, height, width)`` by nearest neighbour."""
    _, h, w = grid_maps.shape
    return grid_maps[:, nearest_source(height, h)][:, :, nearest_source(width, w)]


def footprint_label_counts(
    labels: np.ndarray, footprint: np.ndarray, footprints: int, categories: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per footprint (a pixel, or a patch's upsampled pixels), the pixel count of each of
    ``categories`` ``(F, K)`` and of pixels not ignored ``(F,)``; ``labels`` and
    ``footprint`` give each pixel's label and footprint index."""
    valid = labels != IGNORE_INDEX
    valid_counts = np.bincount(footprint[valid], minlength=footprints).astype(np.float64)
    counts = np.zeros((footprints, len(categories)))
    for k, category in enumerate(categories):
        counts[:, k] = np.bincount(footprint[labels == category], minlength=footprints)
    return counts, valid_counts


def patch_label_counts(
    label_map: np.ndarray, grid: tuple[int, int], categories: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`footprint_label_counts` with each patch of ``grid`` as a footprint: the pixels
    of ``label_map`` that take the patch's value under nearest-neighbour upsampling."""
    height, width = label_map.shape
    rows, cols = nearest_source(height, grid[0]), nearest_source(width, grid[1])
    patch_of_pixel = (rows[:, None] * grid[1] + cols[None, :]).reshape(-1)
    return footprint_label_counts(
        np.asarray(label_map).reshape(-1), patch_of_pixel, grid[0] * grid[1], categories
    )


@dataclass
class InterpretabilityAccumulator:
    """Sums over images for the three metrics; ``labels`` are the part ids scored (the
    background id is used by Impurity only)."""

    labels: list[int]
    background: int
    min_images: int = 5
    locality_sum: dict[int, float] = field(default_factory=dict)
    locality_count: dict[int, int] = field(default_factory=dict)
    pair_iou_sum: dict[tuple[int, int], float] = field(default_factory=dict)
    pair_count: dict[tuple[int, int], int] = field(default_factory=dict)
    entropy_sum: dict[int, float] = field(default_factory=dict)
    entropy_count: dict[int, int] = field(default_factory=dict)

    def add(self, concepts: np.ndarray, concept_masks: np.ndarray, label_map: np.ndarray) -> None:
        """One image: ``concept_masks`` (C, H, W) bool for the concept ids ``concepts``,
        ``label_map`` (H, W) part ids (background and 255 allowed). Each pixel is its own
        footprint in :meth:`add_footprints`."""
        flat = np.asarray(label_map).reshape(-1)
        self.add_footprints(
            concepts,
            np.asarray(concept_masks, bool).reshape(len(concept_masks), flat.size),
            *footprint_label_counts(flat, np.arange(flat.size), flat.size, self.categories),
        )

    def add_patches(
        self,
        concepts: np.ndarray,
        patch_masks: np.ndarray,
        grid: tuple[int, int],
        label_map: np.ndarray,
    ) -> None:
        """One image from patch-level maps ``patch_masks`` (C, h*w) bool: the same sums as
        :meth:`add` on the maps upsampled (nearest) to ``label_map``'s size, computed on the
        patches' pixel counts (:func:`patch_label_counts`) instead of the pixels."""
        self.add_footprints(
            concepts,
            np.asarray(patch_masks, bool),
            *patch_label_counts(label_map, grid, self.categories),
        )

    @property
    def categories(self) -> list[int]:
        """The labels scored, then the background (Impurity's last category)."""
        return [*self.labels, self.background]

    def add_footprints(
        self,
        concepts: np.ndarray,
        active: np.ndarray,
        counts: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """One image as F footprints (pixels or patches): ``active`` (C, F) bool, whether
        concept ``concepts[i]`` covers footprint f; ``counts`` (F, K) the pixels of each of
        :attr:`categories` in it; ``valid`` (F,) its pixels not ignored."""
        active = np.asarray(active, np.float64)
        area = active @ valid  # (C,) each concept's mask, ignored pixels left out
        fired = area > 0
        concepts, active, area = np.asarray(concepts)[fired], active[fired], area[fired]
        shares = active @ counts  # (C, K) intersections with each category
        n_labels = len(self.labels)
        label_area = counts[:, :n_labels].sum(0)
        present = [(j, label) for j, label in enumerate(self.labels) if label_area[j] > 0]
        if len(concepts) and present:
            columns = [j for j, _ in present]
            intersection = shares[:, columns]
            iou = intersection / (area[:, None] + label_area[columns][None, :] - intersection)
            for k, (_, label) in enumerate(present):
                self.locality_sum[label] = self.locality_sum.get(label, 0.0) + float(
                    iou[:, k].max()
                )
                self.locality_count[label] = self.locality_count.get(label, 0) + 1
                for i, concept in enumerate(concepts):
                    key = (int(concept), label)
                    self.pair_iou_sum[key] = self.pair_iou_sum.get(key, 0.0) + float(iou[i, k])
                    self.pair_count[key] = self.pair_count.get(key, 0) + 1
        elif present:  # no concept fired: every present label scores 0 locality
            for _, label in present:
                self.locality_sum[label] = self.locality_sum.get(label, 0.0)
                self.locality_count[label] = self.locality_count.get(label, 0) + 1
        for i, concept in enumerate(concepts):
            p = shares[i] / shares[i].sum()
            p = p[p > 0]
            entropy = float(-(p * np.log(p)).sum())
            self.entropy_sum[int(concept)] = self.entropy_sum.get(int(concept), 0.0) + entropy
            self.entropy_count[int(concept)] = self.entropy_count.get(int(concept), 0) + 1

    def locality(self) -> float:
        values = [
            self.locality_sum[label] / self.locality_count[label] for label in self.locality_count
        ]
        return float(np.mean(values)) if values else float("nan")

    def consistency(self) -> float:
        best: dict[int, float] = {}
        for (concept, label), total in self.pair_iou_sum.items():
            best[label] = max(best.get(label, 0.0), total / self.pair_count[(concept, label)])
        return float(np.mean(list(best.values()))) if best else float("nan")

    def impurity(self) -> float:
        values = [
            self.entropy_sum[c] / self.entropy_count[c]
            for c in self.entropy_count
            if self.entropy_count[c] >= self.min_images
        ]
        return float(np.mean(values)) if values else float("nan")

    def summary(self) -> dict:
        active = sum(1 for c in self.entropy_count if self.entropy_count[c] >= self.min_images)
        return {
            "locality": self.locality(),
            "consistency": self.consistency(),
            "impurity": self.impurity(),
            "active_concepts": active,
        }


PART_DATASETS = {
    # name: (number of part labels, background id, layout)
    "partimagenet": (
        40,
        40,
        "ROOT/images/{split}/**/*.JPEG and ROOT/annotations/{split}/{stem}.png (parts 0-39, background 40)",
    ),
    "coco_stuff": (
        171,
        -1,
        "ROOT/images/val2017/*.jpg and ROOT/annotations/val2017/*_labelTrainIds.png (0-170, 255 ignored)",
    ),
}


def part_pairs(name: str, root, split: str = "test") -> list[tuple[str, object, object]]:
    """``(id, image path, label path)`` of a part-annotated dataset; a missing layout raises
    :class:`DatasetLayoutError` naming it."""
    from pathlib import Path

    from insight.data.images import DatasetLayoutError

    root = Path(root)
    layout = PART_DATASETS[name][2]
    if name == "partimagenet":
        images = sorted(
            p for p in (root / "images" / split).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg")
        )
        pairs = [(p.stem, p, root / "annotations" / split / f"{p.stem}.png") for p in images]
    else:
        images = sorted((root / "images" / "val2017").glob("*.jpg"))
        pairs = [
            (p.stem, p, root / "annotations" / "val2017" / f"{p.stem}_labelTrainIds.png")
            for p in images
        ]
    if not pairs or not all(label.is_file() for _, _, label in pairs):
        raise DatasetLayoutError(
            f"{name}: no complete image/label pairs below {root}; expected layout: {layout}"
        )
    return pairs


def interpretability_rows(
    datasets: dict[str, str],
    frozen: FrozenSpec,
    sae_path: str | Path,
    settings: InterpretabilitySettings,
    device: torch.device,
) -> list[dict]:
    """App. A.1 on each part-annotated dataset, for INSIGHT (patch codes) and for the same
    SAE on the global image embedding broadcast to every patch (no spatial grounding).

    Images are resized (squashed) to the model's input size, so the patch grid maps onto
    the label map exactly; concept maps are binarised at activation > 0."""
    from insight.data.images import DatasetLayoutError

    models = load_frozen(frozen, device)
    model, encoder = models.model, models.encoder
    sae = load_sae(sae_path).to(device)
    grid = tuple(model.visual.grid_size)
    rows = []
    for name, root in datasets.items():
        n_labels, background, _ = PART_DATASETS[name]
        try:
            pairs = part_pairs(name, root, settings.split)
        except DatasetLayoutError as err:
            log.warning("%s not run: %s", name, err)
            rows += [
                {"method": m, "dataset": name, "status": "not run"}
                for m in ("insight", "global_broadcast")
            ]
            continue
        pairs = pairs[: settings.max_images] if settings.max_images else pairs
        minimum = settings.min_images[name]
        accumulators = {
            m: InterpretabilityAccumulator(list(range(n_labels)), background, minimum)
            for m in ("insight", "global_broadcast")
        }
        bar = progress(len(pairs), f"interpretability {name}", "img")
        for _, image_path, label_path in pairs:
            label_map = read_label_map(label_path)
            x = squashed_input(image_path, models, device)
            with torch.no_grad():
                patch_codes = sae.encode(encoder(x)[0]).cpu().numpy()
                global_codes = sae.encode(model.visual(x)).cpu().numpy()
            # both methods share the label map's per-patch counts: computed once per image
            footprints = patch_label_counts(label_map, grid, accumulators["insight"].categories)
            for method, codes in (
                ("insight", patch_codes),
                ("global_broadcast", np.repeat(global_codes, grid[0] * grid[1], axis=0)),
            ):
                active = np.flatnonzero((codes > 0).any(0))
                accumulators[method].add_footprints(active, codes[:, active].T > 0, *footprints)
            bar.update(1)
        bar.close()
        for method, accumulator in accumulators.items():
            rows.append(
                {"method": method, "dataset": name, "images": len(pairs), **accumulator.summary()}
            )
    return rows
