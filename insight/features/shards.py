"""Feature shards: the Parquet contract of DINOised CLIP patch features, read and summarised (Sec. 3.1).

The shard contract: one row per patch with ``image_id`` (string),
``patch`` (int32, row-major index in the grid) and ``embedding`` (fixed-size list of
float32 of length d, or float16 with ``storage: float16``); schema metadata
``insight.grid`` = "h,w", ``insight.backbone`` and ``insight.d``. Rows of one image are
contiguous and in patch order; a row group holds whole images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STORAGE_TYPES = {"float32": (pa.float32(), np.float32), "float16": (pa.float16(), np.float16)}


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
