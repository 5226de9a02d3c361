"""Concept encoding: feature shards -> sparse concept activations (Sec. 3.2).

The concept-shard contract: one row per *non-zero* activation with
``image_id`` (string), ``patch`` (int32), ``concept`` (int32) and ``activation``
(float32); schema metadata ``insight.grid`` and ``insight.d_sae``. Codes come from the
SAE's batch-independent thresholded encoder, so a patch's concepts never depend on
which other patches were encoded with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import atomic_path, with_provenance
from insight.features.shards import embeddings_of
from insight.sae.model import MatryoshkaBatchTopKSAE, load_sae


def concept_schema(grid: str, d_sae: int) -> pa.Schema:
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("patch", pa.int32()),
            ("concept", pa.int32()),
            ("activation", pa.float32()),
        ],
        metadata={"insight.grid": grid, "insight.d_sae": str(d_sae)},
    )


@torch.no_grad()
def sparse_codes(
    sae: MatryoshkaBatchTopKSAE, x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, concepts, activations)`` of the non-zero thresholded codes of ``x``."""
    codes = sae.encode(x)
    rows, cols = torch.nonzero(codes, as_tuple=True)
    return (
        rows.cpu().numpy(),
        cols.cpu().numpy().astype(np.int32),
        codes[rows, cols].float().cpu().numpy(),
    )


def encode_shard(
    sae: MatryoshkaBatchTopKSAE,
    feature_path: str | Path,
    out_path: str | Path,
    chunk_rows: int = 4096,
    device: torch.device | str = "cpu",
) -> dict:
    """Encode every patch of one feature shard; one output row group per input row group."""
    parquet = pq.ParquetFile(feature_path)
    grid = (parquet.schema_arrow.metadata or {}).get(b"insight.grid", b"").decode()
    schema = concept_schema(grid, sae.config.d_sae)
    sae = sae.to(device).eval()
    patches = activations = 0
    with (
        atomic_path(out_path) as tmp,
        pq.ParquetWriter(tmp, with_provenance(schema), compression="zstd") as writer,
    ):
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["image_id", "patch", "embedding"])
            features = embeddings_of(table)
            if not np.isfinite(features).all():
                raise FloatingPointError(
                    f"non-finite feature values in {feature_path}, row group {group}"
                )
            image_ids = table["image_id"].combine_chunks()
            patch_ids = table["patch"].to_numpy()
            pieces = []
            for start in range(0, len(features), chunk_rows):
                chunk = np.require(features[start : start + chunk_rows], requirements="W")
                x = torch.from_numpy(chunk).to(device)
                rows, concepts, values = sparse_codes(sae, x)
                rows = rows + start
                pieces.append(
                    pa.table(
                        {
                            "image_id": image_ids.take(pa.array(rows)),
                            "patch": pa.array(patch_ids[rows], pa.int32()),
                            "concept": pa.array(concepts, pa.int32()),
                            "activation": pa.array(values, pa.float32()),
                        },
                        schema=schema,
                    )
                )
            writer.write_table(pa.concat_tables(pieces), row_group_size=1 << 30)
            patches += len(features)
            activations += sum(p.num_rows for p in pieces)
    return {
        "patches": patches,
        "activations": activations,
        "mean_l0": activations / max(patches, 1),
    }


def summarise_concept_shards(
    concept_paths: list[str | Path], feature_paths: list[str | Path], d_sae: int
) -> dict:
    """Activations, mean L0 per patch and how many concepts fire over a dataset's shards."""
    counts = np.zeros(d_sae, dtype=np.int64)
    for path in concept_paths:
        counts += np.bincount(
            pq.read_table(path, columns=["concept"])["concept"].to_numpy(), minlength=d_sae
        )
    patches = sum(pq.ParquetFile(p).metadata.num_rows for p in feature_paths)
    activations = int(counts.sum())
    return {
        "shards": len(concept_paths),
        "patches": patches,
        "activations": activations,
        "mean_l0": activations / max(patches, 1),
        "concepts_fired": int((counts > 0).sum()),
        "concepts_never_fired": int((counts == 0).sum()),
    }


def encode_concept_shard(
    sae_path: str | Path,
    feature_path: str | Path,
    out_path: str | Path,
    chunk_rows: int,
    device: torch.device,
) -> dict:
    sae = load_sae(sae_path)
    return encode_shard(sae, feature_path, out_path, chunk_rows, device)
