"""The weighted co-occurrence matrix D of the concepts (Sec. 3.3, App. B.3).

``D[j, j'] = sum_i 1[j' active at i] A[j, i] / sum_i A[j, i]`` (Eq. 5 / B.8), summed over
every patch of every image. The numerator and denominator are sums over patches, so
each concept shard gives a *partial* (one job per shard) and one reduce job adds them:
memory depends on the number of concepts m, never on the number of patches.

Choices where the paper leaves room (tested in tests/hierarchy/test_hierarchy.py):
- A concept that never fires has ``sum_i A[j, i] = 0``; its row of D is defined as 0
  (no entries in ``cooccurrence.parquet``).
- ``cooccurrence.parquet`` keeps off-diagonal entries with ``D >= floor`` (config
  ``hierarchy.floor``, default 0.05); the diagonal is always 1 and is not stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from insight.core.io import atomic_path

COOCCURRENCE_SCHEMA = pa.schema(
    [("concept", pa.int32()), ("other", pa.int32()), ("confidence", pa.float32())]
)


TOTALS_SCHEMA = pa.schema(
    [("concept", pa.int32()), ("total_activation", pa.float64()), ("frequency", pa.int64())]
)


@dataclass
class CooccurrencePartial:
    """Sums over some patches: ``numerator[j, j'] = sum_i 1[j' at i] A[j, i]`` (float64),
    ``total[j] = sum_i A[j, i]``, ``frequency[j]`` = patches where j is active, ``patches``."""

    numerator: np.ndarray
    total: np.ndarray
    frequency: np.ndarray
    patches: int = 0

    @classmethod
    def zeros(cls, d_sae: int) -> CooccurrencePartial:
        return cls(np.zeros((d_sae, d_sae)), np.zeros(d_sae), np.zeros(d_sae, dtype=np.int64))

    def add(self, other: CooccurrencePartial) -> None:
        self.numerator += other.numerator
        self.total += other.total
        self.frequency += other.frequency
        self.patches += other.patches

    def confidence(self) -> np.ndarray:
        """Dense D (Eq. 5); rows of concepts that never fire are 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            d = self.numerator / self.total[:, None]
        d[self.total == 0] = 0.0
        return d

    def save(self, path: str | Path) -> None:
        """Save as safetensors, numerator in float32 (the reduce sums in float64): dense when
        more than a quarter of the pairs co-occurred, else only those (flat index j*m + j')."""
        from safetensors.numpy import save_file

        flat = self.numerator.reshape(-1)
        tensors = {
            "total": self.total,
            "frequency": self.frequency,
            "patches": np.array([self.patches], dtype=np.int64),
        }
        if np.count_nonzero(flat) > flat.size // 4:
            tensors["dense"] = self.numerator.astype(np.float32)
        else:
            index = np.flatnonzero(flat)
            tensors["index"] = index.astype(np.int32) if flat.size < 2**31 else index
            tensors["value"] = flat[index].astype(np.float32)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> CooccurrencePartial:
        partial = cls.zeros(0)
        partial.add_file(path)
        return partial

    def add_file(self, path: str | Path) -> None:
        """Add a saved partial into this one (the reduce step; no dense copy of the file)."""
        from safetensors.numpy import load_file

        saved = load_file(str(path))
        m = len(saved["total"])
        if len(self.total) == 0:
            self.numerator, self.total = np.zeros((m, m)), np.zeros(m)
            self.frequency = np.zeros(m, dtype=np.int64)
        if m != len(self.total):
            raise ValueError(f"{path}: partial for {m} concepts, expected {len(self.total)}")
        if "dense" in saved:
            self.numerator += saved["dense"]
        else:
            self.numerator.reshape(-1)[saved["index"]] += saved["value"]
        self.total += saved["total"]
        self.frequency += saved["frequency"]
        self.patches += int(saved["patches"][0])


@numba.njit(nogil=True, cache=True)
def _add_pairs(numerator, starts, concepts, activations, lo, hi):  # pragma: no cover - compiled
    """For every patch p (rows starts[p]..starts[p+1]) and every concept j in [lo, hi)
    active on it: numerator[j, j'] += A[j, p] for each concept j' active on p."""
    for p in range(len(starts) - 1):
        begin, end = starts[p], starts[p + 1]
        for a in range(begin, end):
            j = concepts[a]
            if j < lo or j >= hi:
                continue
            weight = np.float64(activations[a])
            row = numerator[j]
            for b in range(begin, end):
                row[concepts[b]] += weight


def accumulate_patches(
    partial: CooccurrencePartial,
    patch_of_row: np.ndarray,
    concepts: np.ndarray,
    activations: np.ndarray,
) -> None:
    """Add the pairs of each patch into ``partial`` (rows grouped by patch, ``patch_of_row``
    non-decreasing from 0). Every ordered pair (j, j') of concepts active on the same patch
    adds A[j, i] to ``numerator[j, j']`` (j = j' included, giving the diagonal = total).

    A compiled loop (numba) does the pairs; two threads own disjoint row ranges of the
    accumulator, split so each has about half of the pairs (no races, no atomics).
    """
    m = len(partial.total)
    if len(concepts) == 0:
        return
    n_patches = int(patch_of_row[-1]) + 1
    count = np.bincount(patch_of_row, minlength=n_patches)
    starts = np.concatenate([[0], np.cumsum(count)])
    concepts = np.ascontiguousarray(concepts, dtype=np.int32)
    activations = np.ascontiguousarray(activations, dtype=np.float32)
    work = np.cumsum(np.bincount(concepts, weights=count[patch_of_row], minlength=m))
    split = int(np.searchsorted(work, work[-1] / 2))
    with ThreadPoolExecutor(2) as pool:
        ranges = [(0, split), (split, m)]
        list(
            pool.map(
                lambda r: _add_pairs(partial.numerator, starts, concepts, activations, *r), ranges
            )
        )
    partial.total += np.bincount(concepts, weights=activations.astype(np.float64), minlength=m)
    partial.frequency += np.bincount(concepts, minlength=m)
    partial.patches += n_patches


def patch_runs(image_keys: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """0-based patch index of each row, for rows that come grouped by (image, patch)."""
    if len(image_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    changed = (image_keys[1:] != image_keys[:-1]) | (patches[1:] != patches[:-1])
    return np.concatenate([[0], np.cumsum(changed)])


def concept_batches(
    path: str | Path, min_activation: float = 0.0, rows_per_batch: int = 1_000_000
) -> Iterator[pa.RecordBatch]:
    """Stream a concept shard through DuckDB in its stored order (the rows of a patch stay
    together), keeping activations above ``min_activation``. Images come as a 64-bit hash
    of ``image_id``: only *neighbouring* rows are compared, so a collision would need two
    consecutive images with equal hashes (probability 2^-64 per image boundary)."""
    import duckdb

    con = duckdb.connect()
    con.execute("set preserve_insertion_order = true")
    relation = con.sql(
        "select hash(image_id) as image_key, patch, concept, activation "
        "from read_parquet($path) where activation > $floor",
        params={"path": str(path), "floor": min_activation},
    )
    yield from relation.to_arrow_reader(rows_per_batch)


def shards_partial(
    paths: Iterable[str | Path],
    d_sae: int,
    min_activation: float = 0.0,
    rows_per_batch: int = 1_000_000,
) -> CooccurrencePartial:
    """The partial sums of some concept shards (one partial job). Each shard streams through
    DuckDB; a patch cut between two batches is carried over to the next one."""
    partial = CooccurrencePartial.zeros(d_sae)
    for path in paths:
        carry: pa.Table | None = None
        for batch in concept_batches(path, min_activation, rows_per_batch):
            table = pa.Table.from_batches([batch])
            if carry is not None:
                table = pa.concat_tables([carry, table])
            table = table.combine_chunks()
            runs = patch_runs(table["image_key"].to_numpy(), table["patch"].to_numpy())
            last = np.searchsorted(runs, runs[-1])  # the last patch may go on in the next batch
            _accumulate_table(partial, table.slice(0, last), runs[:last], d_sae)
            carry = table.slice(last)
        if carry is not None and carry.num_rows:
            carry = carry.combine_chunks()
            runs = patch_runs(carry["image_key"].to_numpy(), carry["patch"].to_numpy())
            _accumulate_table(partial, carry, runs, d_sae)
    return partial


def _accumulate_table(
    partial: CooccurrencePartial, table: pa.Table, runs: np.ndarray, d_sae: int
) -> None:
    if table.num_rows == 0:
        return
    concepts = table["concept"].to_numpy()
    if concepts.min() < 0 or concepts.max() >= d_sae:
        raise ValueError(
            f"concept ids must be in [0, {d_sae}); got {concepts.min()}..{concepts.max()}"
        )
    accumulate_patches(
        partial, runs - runs[0], concepts, table["activation"].to_numpy().astype(np.float64)
    )


def reduce_partials(paths: Iterable[str | Path], d_sae: int) -> CooccurrencePartial:
    total = CooccurrencePartial.zeros(d_sae)
    for path in paths:
        total.add_file(path)
    return total


def cooccurrence_table(partial: CooccurrencePartial, floor: float) -> pa.Table:
    """Off-diagonal entries of D with ``D >= floor``, as (concept, other, confidence)."""
    d = partial.confidence()
    np.fill_diagonal(d, 0.0)
    concept, other = np.nonzero(d >= floor) if floor > 0 else np.nonzero(d > 0)
    return pa.table(
        {
            "concept": concept.astype(np.int32),
            "other": other.astype(np.int32),
            "confidence": d[concept, other].astype(np.float32),
        },
        schema=COOCCURRENCE_SCHEMA,
    )


def totals_table(partial: CooccurrencePartial) -> pa.Table:
    m = len(partial.total)
    return pa.table(
        {
            "concept": np.arange(m, dtype=np.int32),
            "total_activation": partial.total,
            "frequency": partial.frequency,
        },
        schema=TOTALS_SCHEMA,
    )
