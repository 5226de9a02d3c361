"""Feature extraction: one shard of the image index -> DINOised MaskCLIP patch features (Sec. 3.1, Eq. 1)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import atomic_path, with_provenance, write_parquet
from insight.core.logs import progress
from insight.core.sections import FeaturesSettings, ImagesSettings
from insight.data.batches import BatchTransform, decoded_batches
from insight.data.images import (
    DEFAULT_POLICY,
    REJECTED_SCHEMA,
    DecodePolicy,
    ImageRef,
    decode_policy,
    refs_of_shard,
)
from insight.features.shards import feature_schema, feature_table
from insight.models.dense import DenseEncoder
from insight.models.frozen import FrozenSpec, load_frozen

log = logging.getLogger(__name__)


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
        pq.ParquetWriter(tmp, with_provenance(schema), compression="zstd") as writer,
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


def extract_config(features: FeaturesSettings, images: ImagesSettings) -> ExtractConfig:
    """What one extraction job needs of the ``features`` and ``images`` settings."""
    return ExtractConfig(
        batch_size=features.batch_size,
        storage=features.storage,
        row_group_images=features.row_group_images,
        decode_threads=features.decode_threads,
        policy=decode_policy(images),
    )


def extract_shard_from_index(
    index: pa.Table,
    shard: int,
    frozen: FrozenSpec,
    config: ExtractConfig,
    device: torch.device,
    out_path: str | Path,
    rejected_path: str | Path,
) -> ShardStats:
    """Extract one shard of the image index to the feature contract."""
    refs = refs_of_shard(index, shard)
    if not refs:
        raise ValueError(f"shard {shard} is empty in the image index")
    models = load_frozen(frozen, device)
    bar = progress(len(refs), f"features shard {shard:05d}", "img")
    stats = extract_shard(
        models.encoder,
        models.transform,
        refs,
        out_path,
        rejected_path,
        frozen.backbone.name,
        config,
        device,
        bar.update,
    )
    bar.close()
    if stats.rejected:
        log.warning(
            "shard %05d: %d of %d images rejected (see %s)",
            shard,
            stats.rejected,
            len(refs),
            rejected_path,
        )
    return stats
