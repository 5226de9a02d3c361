"""Open-vocabulary segmentation: the CLIP-DINOiser protocol's pieces (Sec. 4.4).

- :func:`resize_to_protocol`: short side to 448 with ``scale = min(2048 / long, 448 / short)``.
- :func:`slide_inference`: windows of 448 with stride 224 as mmseg 0.x places them; the
  window logits are averaged where windows overlap.
- :func:`intersect_and_union` / :class:`IoUAccumulator`: mmseg's mIoU: per-class
  intersections and unions summed over the whole dataset, GT 255 ignored, optional
  ``reduce_zero_label`` (0 becomes 255, every other label moves down by one), and the
  mean taken over classes whose union is not zero (nanmean).
- :func:`imagenet_prompts`: the 80 ImageNet templates shipped by open_clip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def protocol_size(
    height: int, width: int, short: int = 448, long_max: int = 2048
) -> tuple[int, int]:
    """mmseg ``Resize(scale=(2048, 448), keep_ratio=True)``: the largest size with the short
    side at most ``short`` and the long side at most ``long_max``."""
    scale = min(long_max / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_to_protocol(image: torch.Tensor, short: int = 448, long_max: int = 2048) -> torch.Tensor:
    """Resize a ``(B, 3, H, W)`` float image bilinearly to the protocol size."""
    size = protocol_size(image.shape[-2], image.shape[-1], short, long_max)
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def slide_inference(
    image: torch.Tensor,
    window_logits: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    window: int = 448,
    stride: int = 224,
) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` of an image from overlapping windows (mmseg 0.x
    ``slide_inference``): windows start every ``stride`` pixels, the last one is shifted
    back to end at the border, and overlapping logits are averaged. ``window_logits``
    maps a crop ``(B, 3, h, w)`` to logits ``(B, C, h, w)``."""
    batch, _, height, width = image.shape
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    logits = image.new_zeros((batch, num_classes, height, width))
    counts = image.new_zeros((batch, 1, height, width))
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride + window, height), min(col * stride + window, width)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            logits[:, :, y1:y2, x1:x2] += window_logits(image[:, :, y1:y2, x1:x2])
            counts[:, :, y1:y2, x1:x2] += 1
    return logits / counts


def scored_label(label: np.ndarray, reduce_zero_label: bool = False) -> np.ndarray:
    """Label ids as scored (int64): with ``reduce_zero_label`` 0 is ignored and the rest shift down."""
    label = label.astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, IGNORE_INDEX, label - 1)
        label[label == IGNORE_INDEX - 1] = IGNORE_INDEX
    return label


def chance_miou(label_area: np.ndarray) -> float:
    """The mIoU expected from labels drawn uniformly at random per pixel, given the
    ground-truth area ``a_c`` of each of the K classes (N pixels in all): class c gets
    intersection ``a_c / K`` and union ``a_c + N / K - a_c / K``; averaged over all K
    classes (random labels predict every class, so every union is positive)."""
    area = np.asarray(label_area, dtype=np.float64)
    k, n = len(area), area.sum()
    return float(np.mean((area / k) / (area + n / k - area / k)))


def intersect_and_union(
    prediction: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    reduce_zero_label: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class intersection, union and ground-truth areas of one image (mmseg semantics)."""
    label = scored_label(label, reduce_zero_label)
    valid = label != ignore_index
    prediction, label = prediction[valid].astype(np.int64), label[valid]
    hits = prediction[prediction == label]
    intersect = np.bincount(hits, minlength=num_classes)[:num_classes]
    area_prediction = np.bincount(prediction, minlength=num_classes)[:num_classes]
    area_label = np.bincount(label, minlength=num_classes)[:num_classes]
    return intersect, area_prediction + area_label - intersect, area_label


class IoUAccumulator:
    """Dataset-level IoU: sums of per-class intersections and unions over images."""

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, reduce_zero_label: bool = False
    ):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.intersect = np.zeros(num_classes, dtype=np.int64)
        self.union = np.zeros(num_classes, dtype=np.int64)
        self.label_area = np.zeros(num_classes, dtype=np.int64)
        self.images = 0

    def add(self, prediction: np.ndarray, label: np.ndarray) -> None:
        if prediction.shape != label.shape:
            raise ValueError(
                f"prediction {prediction.shape} and label {label.shape} differ in size"
            )
        intersect, union, label_area = intersect_and_union(
            prediction, label, self.num_classes, self.ignore_index, self.reduce_zero_label
        )
        self.intersect += intersect
        self.union += union
        self.label_area += label_area
        self.images += 1

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes with zero union (absent from both GT and prediction)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersect / self.union, np.nan)

    def miou(self) -> float:
        return float(np.nanmean(self.iou())) if (self.union > 0).any() else float("nan")
