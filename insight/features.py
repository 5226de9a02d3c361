"""Feature extraction: images -> DINOised CLIP patch features in Parquet shards (Sec. 3.1).

The shard contract (DESIGN.md section 4): one row per patch with ``image_id`` (string),
``patch`` (int32, row-major index in the grid) and ``embedding`` (fixed-size list of
float32 of length d, or float16 with ``storage: float16``); schema metadata
``insight.grid`` = "h,w", ``insight.backbone`` and ``insight.d``. Rows of one image are
contiguous and in patch order; a row group holds whole images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from insight.backbone import maskclip_features
from insight.dinoiser import DINOiser
from insight.images import (
    DEFAULT_POLICY,
    REJECTED_SCHEMA,
    DecodePolicy,
    ImageRef,
    decode_image,
    iter_bytes,
)
from insight.io import atomic_path, write_parquet
from insight.runtime import DTYPES

STORAGE_TYPES = {"float32": (pa.float32(), np.float32), "float16": (pa.float16(), np.float16)}


class BatchTransform:
    """open_clip's image preprocessing, split in two: the PIL part (resize, crop, mode)
    runs per image in decode threads and yields uint8 arrays; ``ToTensor`` + ``Normalize``
    run once per batch, on the model's device. The result equals the composed transform
    (up to float rounding) while no torch work, and no oversubscribed torch thread pool,
    runs inside the decode threads, and 4x fewer bytes cross to the GPU.
    """

    def __init__(self, preprocess: Callable):
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        names = [type(step).__name__ for step in steps]
        if not any("ToTensor" in n for n in names):
            raise TypeError(f"unsupported image transform {preprocess!r}: no ToTensor step")
        cut = next(i for i, n in enumerate(names) if "ToTensor" in n)
        tail = steps[cut + 1 :]
        if len(tail) > 1 or (tail and type(tail[0]).__name__ != "Normalize"):
            raise TypeError(
                f"unsupported image transform {preprocess!r}: only Normalize may follow ToTensor"
            )
        self.pil_steps = steps[:cut]
        mean = tail[0].mean if tail else (0.0, 0.0, 0.0)
        std = tail[0].std if tail else (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def pil(self, image) -> np.ndarray:
        """Resize/crop/convert one PIL image; returns an (H, W, 3) uint8 array."""
        for step in self.pil_steps:
            image = step(image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def batch(self, pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> normalised ``(B, 3, H, W)`` float32 on ``device``."""
        x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def feature_schema(
    d: int, grid: tuple[int, int], backbone: str, storage: str = "float32"
) -> pa.Schema:
    """The Arrow schema of a feature shard, with the grid and backbone as metadata."""
    value_type = STORAGE_TYPES[storage][0]
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("patch", pa.int32()),
            ("embedding", pa.list_(value_type, d)),
        ],
        metadata={
            "insight.grid": f"{grid[0]},{grid[1]}",
            "insight.backbone": backbone,
            "insight.d": str(d),
        },
    )


def feature_table(image_ids: Sequence[str], embeddings: np.ndarray, schema: pa.Schema) -> pa.Table:
    """Rows for ``embeddings (n_images, n_patches, d)`` in the shard schema."""
    n_images, n_patches, d = embeddings.shape
    value_type = schema.field("embedding").type.value_type
    numpy_type = np.float16 if value_type == pa.float16() else np.float32
    values = pa.array(np.ascontiguousarray(embeddings, dtype=numpy_type).reshape(-1))
    return pa.table(
        {
            "image_id": pa.array(
                np.repeat(np.asarray(image_ids, dtype=object), n_patches), pa.string()
            ),
            "patch": pa.array(np.tile(np.arange(n_patches, dtype=np.int32), n_images)),
            "embedding": pa.FixedSizeListArray.from_arrays(values, d),
        },
        schema=schema,
    )


def shard_grid(path: str | Path) -> tuple[int, int]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"insight.grid")
    if raw is None:
        raise ValueError(f"{path}: no insight.grid metadata; not a feature shard")
    h, w = (int(v) for v in raw.decode().split(","))
    return h, w


def embeddings_of(table: pa.Table | pa.RecordBatch, column: str = "embedding") -> np.ndarray:
    """The ``(rows, d)`` float32 matrix of a fixed-size-list column, without copying rows."""
    col = table.column(column)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    d = col.type.list_size
    return (
        col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32, copy=False)
    )


def iter_feature_batches(
    paths: Iterable[str | Path], columns: Sequence[str] = ("image_id", "patch", "embedding")
) -> Iterator[tuple[str, pa.Table]]:
    """Stream ``(shard path, row group)`` one row group at a time (bounded memory)."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield str(path), parquet.read_row_group(group, columns=list(columns))


class DenseEncoder(nn.Module):
    """CLIP visual tower + DINOiser: normalised images -> DINOised patch features (B, N, d).

    ``precision`` casts the *weights* of the visual tower (``bf16`` runs about 2.3x
    faster than fp32 on AVX512-BF16/AMX CPUs, where ``torch.autocast`` is slower than
    fp32 because it re-casts weights on every call); guided pooling and the output are
    always float32.
    """

    def __init__(
        self,
        visual: nn.Module,
        dinoiser: DINOiser | None,
        gamma: float = 0.2,
        precision: str = "fp32",
    ):
        super().__init__()
        self.visual = visual.to(DTYPES[precision])
        self.dinoiser = dinoiser
        self.gamma = gamma
        self.precision = precision

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dense = maskclip_features(self.visual, images.to(DTYPES[self.precision])).float()
        if self.dinoiser is not None:
            dense = self.dinoiser(dense, self.gamma)
        return dense.flatten(2).transpose(1, 2).float()


@dataclass(frozen=True)
class ExtractConfig:
    batch_size: int = 64
    storage: str = "float32"
    row_group_images: int = 128
    decode_threads: int = 2
    policy: DecodePolicy = DEFAULT_POLICY


@dataclass
class ShardStats:
    images: int = 0
    patches: int = 0
    rejected: int = 0


def _decode_batch(
    items: list[tuple[ImageRef, bytes | None, str | None]],
    transform: BatchTransform,
    pool: ThreadPoolExecutor,
    policy: DecodePolicy,
) -> tuple[list[ImageRef], torch.Tensor | None, list[dict]]:
    """Decode and resize a batch in ``pool``; returns good refs, their uint8 pixels
    ``(B, H, W, 3)`` and the rejected rows."""

    def one(
        item: tuple[ImageRef, bytes | None, str | None],
    ) -> tuple[ImageRef, np.ndarray | None, str | None]:
        ref, data, error = item
        if error is not None:
            return ref, None, error
        image, reason = decode_image(data, policy)
        if image is None:
            return ref, None, reason
        return ref, transform.pil(image), None

    results = list(pool.map(one, items))
    rejected = [
        {
            "image_id": ref.image_id,
            "path": ref.path if ref.member is None else f"{ref.path}:{ref.member}",
            "reason": reason,
        }
        for ref, pixels, reason in results
        if pixels is None
    ]
    good = [(ref, pixels) for ref, pixels, _ in results if pixels is not None]
    if not good:
        return [], None, rejected
    refs, pixels = zip(*good, strict=True)
    return list(refs), torch.from_numpy(np.stack(pixels)), rejected


def _batched(iterable: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetched(items: Iterator, work: Callable) -> Iterator:
    """Yield ``work(item)`` for each item, computing the next one in a background thread."""
    with ThreadPoolExecutor(1) as ahead:
        future = None
        for item in items:
            following = ahead.submit(work, item)
            if future is not None:
                yield future.result()
            future = following
        if future is not None:
            yield future.result()


def decoded_batches(
    refs: Sequence[ImageRef],
    transform: BatchTransform,
    batch_size: int,
    policy: DecodePolicy = DEFAULT_POLICY,
    threads: int = 2,
) -> Iterator[tuple[list[ImageRef], torch.Tensor | None, list[dict]]]:
    """Yield ``(good refs, uint8 pixels or None, rejected rows)`` per batch of ``refs``
    (``transform.batch`` turns the pixels into model input).

    Batch i+1 is decoded in background threads while the caller works on batch i.
    """
    with ThreadPoolExecutor(threads) as pool:
        batches = _batched(iter_bytes(refs), batch_size)
        yield from _prefetched(batches, lambda batch: _decode_batch(batch, transform, pool, policy))


def extract_shard(
    encoder: DenseEncoder,
    transform: BatchTransform,
    refs: Sequence[ImageRef],
    out_path: str | Path,
    rejected_path: str | Path,
    backbone_name: str,
    config: ExtractConfig | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ShardStats:
    """Decode, encode and write one shard; unreadable images go to the rejected table.

    Decoding of batch i+1 overlaps the forward pass of batch i (Pillow and torchvision
    release the GIL). Both outputs are written atomically; non-finite features stop the
    shard with the offending image ids.
    """
    config = config or ExtractConfig()
    device = torch.device(device)
    stats = ShardStats()
    rejected: list[dict] = []
    grid = (encoder.visual.grid_size[0], encoder.visual.grid_size[1])
    schema = feature_schema(int(encoder.visual.output_dim), grid, backbone_name, config.storage)
    pending: list[pa.Table] = []
    pending_images = 0
    with (
        atomic_path(out_path) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        ThreadPoolExecutor(1) as background,
    ):
        # row groups are written in a background thread (pyarrow releases the GIL), so
        # compression and disk I/O overlap the next batches' forward pass
        written = None

        def flush() -> None:
            nonlocal written, pending, pending_images
            if written is not None:
                written.result()
            written = background.submit(
                writer.write_table, pa.concat_tables(pending), row_group_size=1 << 30
            )
            pending, pending_images = [], 0

        for good_refs, images, bad in decoded_batches(
            refs, transform, config.batch_size, config.policy, config.decode_threads
        ):
            rejected.extend(bad)
            stats.rejected += len(bad)
            if images is not None:
                feats = encoder(transform.batch(images, device))
                feats = feats.cpu().numpy()
                finite = np.isfinite(feats).all(axis=(1, 2))
                if not finite.all():
                    bad_ids = [
                        r.image_id for r, ok in zip(good_refs, finite, strict=True) if not ok
                    ]
                    raise FloatingPointError(
                        f"{out_path}: non-finite features for images {bad_ids[:5]}"
                    )
                pending.append(feature_table([r.image_id for r in good_refs], feats, schema))
                pending_images += len(good_refs)
                stats.images += len(good_refs)
                stats.patches += feats.shape[0] * feats.shape[1]
                if pending_images >= config.row_group_images:
                    flush()
            if progress is not None:
                progress(len(good_refs) + len(bad))
        if pending:
            flush()
        if written is not None:
            written.result()
    write_parquet(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), rejected_path)
    return stats


def summarise_shards(
    feature_paths: Sequence[str | Path], rejected_paths: Sequence[str | Path]
) -> dict:
    """Images, patches and rejected images (with counts per reason) over a dataset's shards."""
    images = patches = 0
    for path in feature_paths:
        parquet = pq.ParquetFile(path)
        patches += parquet.metadata.num_rows
        grid = shard_grid(path)
        images += parquet.metadata.num_rows // (grid[0] * grid[1])
    reasons: dict[str, int] = {}
    for path in rejected_paths:
        for reason in pq.read_table(path, columns=["reason"])["reason"].to_pylist():
            kind = reason.split(":")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
    return {
        "shards": len(feature_paths),
        "images": images,
        "patches": patches,
        "rejected": sum(reasons.values()),
        "rejected_by_reason": reasons,
    }
