"""Generated patch features with a planted sparse dictionary, written in the shard contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from insight.core.io import write_parquet
from insight.features.shards import feature_schema, feature_table


def planted_features(n: int, d: int, atoms: int, active: int, seed: int = 0, noise: float = 0.01):
    """``n`` vectors, each a positive combination of ``active`` of ``atoms`` unit atoms."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(atoms, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    # a Zipf-like atom frequency, as real concepts have
    frequency = 1.0 / np.arange(1, atoms + 1) ** 0.5
    frequency /= frequency.sum()
    x = np.zeros((n, d))
    for i in range(n):
        chosen = rng.choice(atoms, size=active, replace=False, p=frequency)
        x[i] = rng.uniform(1.0, 3.0, size=active) @ dictionary[chosen]
    x += noise * rng.normal(size=x.shape)
    return x.astype(np.float32), dictionary.astype(np.float32)


def write_shards(
    out_dir: Path, x: np.ndarray, patches_per_image: int = 16, images_per_shard: int = 64
) -> list[Path]:
    """Write rows as images of ``patches_per_image`` patches (a 4x4 grid) into shards."""
    n, d = x.shape
    images = n // patches_per_image
    side = int(np.sqrt(patches_per_image))
    schema = feature_schema(d, (side, side), "planted")
    paths = []
    for shard, start in enumerate(range(0, images, images_per_shard)):
        stop = min(images, start + images_per_shard)
        ids = [f"img{i:06d}" for i in range(start, stop)]
        block = x[start * patches_per_image : stop * patches_per_image].reshape(
            len(ids), patches_per_image, d
        )
        path = out_dir / f"shard-{shard:05d}.parquet"
        write_parquet(
            feature_table(ids, block, schema), path, row_group_size=16 * patches_per_image
        )
        paths.append(path)
    return paths
