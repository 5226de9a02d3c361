"""The SAE's training data: feature shards as a seeded, resumable stream of batches.

As in SAELens the trainer knows nothing of the data's origin: :class:`FeatureBatches`
is a plain, seeded, resumable iterator of float32 tensors over the rows of one split
(training, held-out or calibration images, split by a stable hash of each image id).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from insight.core.sections import SAESettings
from insight.features.shards import embeddings_of


def image_buckets(image_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each row's bucket: a stable hash of its ``image_id`` (crc32 mod 10,000), so all patches
    of an image fall in the same split."""
    if isinstance(image_ids, pa.ChunkedArray):
        image_ids = image_ids.combine_chunks()
    encoded = pc.dictionary_encode(image_ids)
    buckets = np.array(
        [zlib.crc32(s.encode()) % 10_000 for s in encoded.dictionary.to_pylist()], dtype=np.int64
    )
    return buckets[encoded.indices.to_numpy(zero_copy_only=False)]


SPLITS = ("train", "heldout", "calibration")


def split_mask(
    image_ids: pa.Array | pa.ChunkedArray,
    split: str,
    holdout_fraction: float,
    calibration_fraction: float = 0.0,
) -> np.ndarray:
    """Rows of ``split`` by image: ``heldout`` below ``holdout_fraction`` of the buckets,
    ``calibration`` the next ``calibration_fraction``, ``train`` the rest."""
    buckets = image_buckets(image_ids)
    held = round(holdout_fraction * 10_000)
    calibration = held + round(calibration_fraction * 10_000)
    if split == "heldout":
        return buckets < held
    if split == "calibration":
        return (buckets >= held) & (buckets < calibration)
    return buckets >= calibration


class FeatureBatches:
    """Seeded batches of patch embeddings from feature shards, for one split.

    Each epoch visits the row groups of all shards in a seeded random order, keeps the
    rows of the split (``train``, ``heldout`` or ``calibration``, by image:
    :func:`split_mask`), and shuffles them through a
    buffer of ``shuffle_buffer`` rows; the last incomplete batch is dropped in training.
    With ``batch_images`` (the paper and the release: 83 images, 16,268 patches) a batch is
    that many whole images instead: images, not rows, are shuffled through the buffer and
    each keeps all its patches together.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        split: str = "train",
        holdout_fraction: float = 0.1,
        shuffle_buffer: int = 262_144,
        seed: int = 0,
        calibration_fraction: float = 0.0,
        batch_images: int | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.paths = [str(p) for p in paths]
        self.batch_size = batch_size
        self.split = split
        self.holdout_fraction = holdout_fraction
        self.calibration_fraction = calibration_fraction
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.seed = seed
        self.batch_images = batch_images
        self.row_groups = [
            (p, g) for p in self.paths for g in range(pq.ParquetFile(p).num_row_groups)
        ]
        if not self.row_groups:
            raise ValueError("no feature shards to train on")
        self.d_in = pq.read_schema(self.paths[0]).field("embedding").type.list_size

    def _rows_and_images(self, path: str, group: int) -> tuple[np.ndarray, np.ndarray]:
        """The split's rows of one row group and each row's image (codes local to the group)."""
        table = pq.ParquetFile(path).read_row_group(group, columns=["image_id", "embedding"])
        rows = embeddings_of(table)
        if not np.isfinite(rows).all():
            raise FloatingPointError(f"non-finite feature values in {path}, row group {group}")
        keep = split_mask(
            table["image_id"], self.split, self.holdout_fraction, self.calibration_fraction
        )
        images = pc.dictionary_encode(table["image_id"].combine_chunks()).indices.to_numpy()
        return rows[keep], images[keep]

    def _rows(self, path: str, group: int) -> np.ndarray:
        return self._rows_and_images(path, group)[0]

    def count_rows(self) -> int:
        return sum(len(self._rows(p, g)) for p, g in self.row_groups)

    def steps_per_epoch(self) -> int:
        """Full batches in one epoch: rows // batch_size, or images // batch_images."""
        if self.batch_images is None:
            return self.count_rows() // self.batch_size
        images = sum(len(np.unique(self._rows_and_images(p, g)[1])) for p, g in self.row_groups)
        return images // self.batch_images

    def _image_epoch(self, epoch: int, shuffle: bool, drop_last: bool) -> Iterator[torch.Tensor]:
        """Batches of ``batch_images`` whole images, images shuffled through the buffer."""
        rng = np.random.default_rng([self.seed, epoch])
        order = (
            rng.permutation(len(self.row_groups)) if shuffle else np.arange(len(self.row_groups))
        )
        images: list[np.ndarray] = []  # one (patches, d) array per image
        buffered = 0
        for i, position in enumerate(order):
            rows, image = self._rows_and_images(*self.row_groups[position])
            starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]]) if len(image) else []
            images += np.split(rows, starts[1:]) if len(rows) else []
            buffered += len(rows)
            last = i == len(order) - 1
            if buffered < self.shuffle_buffer and not last:
                continue
            if shuffle:
                images = [images[j] for j in rng.permutation(len(images))]
            usable = len(images) - len(images) % self.batch_images
            if last and not drop_last:
                usable = len(images)
            for start in range(0, usable, self.batch_images):
                yield torch.from_numpy(np.concatenate(images[start : start + self.batch_images]))
            images = images[usable:]
            buffered = sum(len(x) for x in images)

    def epoch(
        self, epoch: int, shuffle: bool = True, drop_last: bool = True
    ) -> Iterator[torch.Tensor]:
        if self.batch_images is not None:
            yield from self._image_epoch(epoch, shuffle, drop_last)
            return
        rng = np.random.default_rng([self.seed, epoch])
        order = (
            rng.permutation(len(self.row_groups)) if shuffle else np.arange(len(self.row_groups))
        )
        buffer = np.empty((0, self.d_in), dtype=np.float32)
        for position in order:
            buffer = np.concatenate([buffer, self._rows(*self.row_groups[position])])
            if len(buffer) >= self.shuffle_buffer:
                if shuffle:
                    buffer = buffer[rng.permutation(len(buffer))]
                usable = len(buffer) - len(buffer) % self.batch_size
                for start in range(0, usable, self.batch_size):
                    yield torch.from_numpy(buffer[start : start + self.batch_size])
                buffer = buffer[usable:]
        if shuffle:
            buffer = buffer[rng.permutation(len(buffer))]
        for start in range(0, len(buffer), self.batch_size):
            chunk = buffer[start : start + self.batch_size]
            if len(chunk) == self.batch_size or not drop_last:
                yield torch.from_numpy(chunk)


def first_rows(data: FeatureBatches, rows: int, device: torch.device) -> list[torch.Tensor]:
    """The batches of ``data`` (unshuffled) up to ``rows`` rows, on ``device``."""
    batches, seen = [], 0
    for x in data.epoch(0, shuffle=False, drop_last=False):
        batches.append(x.to(device))
        seen += x.shape[0]
        if seen >= rows:
            break
    return batches


def heldout_batches(
    feature_paths: Sequence[str | Path], settings: SAESettings
) -> Iterator[torch.Tensor]:
    """One pass over the held-out images of the shards (``sae.holdout_fraction``)."""
    heldout = FeatureBatches(
        [str(p) for p in feature_paths],
        settings.batch_size,
        "heldout",
        settings.holdout_fraction,
        seed=settings.seed,
    )
    return heldout.epoch(0, shuffle=False, drop_last=False)
