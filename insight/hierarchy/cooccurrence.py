"""The weighted co-occurrence matrix D of the concepts (Sec. 3.3, App. B.3) and its evidence.

``D[j, j'] = sum_i 1[j' active at i] A[j, i] / sum_i A[j, i]`` (Eq. 5 / B.8), summed over
every patch of every image. The same streaming pass sums what the ``baseline`` family
criterion needs (:mod:`insight.hierarchy.families`):

- ``baseline[j, j'] = sum_g W_j(g) n_j'(g) / P_g``, so ``D0 = baseline / total`` is what D
  would be if j's activation mass sat at random among the patches of its own images
  (g an image, ``W_j(g)`` j's mass in it, ``n_j'(g)`` the patches where j' fires, ``P_g``
  the image's patches, from the shard's ``insight.grid``);
- ``pair_images[j, j']``: images where both fire; ``images[j]``: images where j fires;
  ``coverage[j] = sum_g n_j(g) / P_g`` (its mean share of its images' patches is
  ``coverage / images``).

All are sums over images, so each concept shard gives a *partial* (one job per group of
shards, :mod:`insight.hierarchy.streaming`) and one reduce job adds them: memory depends on the number of concepts m, never
on the number of patches. The three m x m sums take about 40 m^2 bytes (both halves); with
``hierarchy.concept_blocks`` B a partial holds only the rows of one block of m / B
concepts (one job per group and block) and the reduce adds one block at a time, so a job
needs about 40 m^2 / B bytes (24 GB at m = 24,576 unblocked, 6 GB with B = 4). Each partial keeps the even and the odd shards apart (two
halves of the images, reduced separately, so an edge can be checked on each half with no
second pass); the whole is their sum.

Choices where the paper leaves room (tested in tests/hierarchy/test_hierarchy.py):
- A concept that never fires has ``sum_i A[j, i] = 0``; its row of D is defined as 0
  (no entries in ``cooccurrence.parquet``).
- ``cooccurrence.parquet`` keeps off-diagonal entries with ``D >= floor`` (config
  ``hierarchy.floor``, default 0.05); the diagonal is always 1 and is not stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from insight.core.io import atomic_path

COOCCURRENCE_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("other", pa.int32()),
        ("confidence", pa.float32()),
        ("baseline", pa.float32()),
        ("images", pa.int32()),
        ("confidence_even", pa.float32()),
        ("baseline_even", pa.float32()),
        ("confidence_odd", pa.float32()),
        ("baseline_odd", pa.float32()),
    ]
)


TOTALS_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("total_activation", pa.float64()),
        ("frequency", pa.int64()),
        ("images", pa.int64()),
        ("coverage", pa.float64()),
        ("images_even", pa.int64()),
        ("images_odd", pa.int64()),
    ]
)

HALVES = ("even", "odd")
_MATRICES = ("numerator", "baseline", "pair_images")
_VECTORS = ("total", "frequency", "images", "coverage")


@dataclass
class HalfSums:
    """Sums over the images of some shards: ``numerator[j, j'] = sum_i 1[j' at i] A[j, i]``,
    ``baseline``, ``pair_images``, ``total[j] = sum_i A[j, i]``, ``frequency[j]`` (patches
    where j is active), ``images``, ``coverage`` (see the module docstring), ``patches`` and
    ``image_count`` seen."""

    numerator: np.ndarray
    baseline: np.ndarray
    pair_images: np.ndarray
    total: np.ndarray
    frequency: np.ndarray
    images: np.ndarray
    coverage: np.ndarray
    patches: int = 0
    image_count: int = 0
    rows: tuple[int, int] = (0, 0)
    """The concepts [lo, hi) whose rows the matrices hold (and whose images and coverage
    are counted): all of them unless the partial is one block."""

    @classmethod
    def zeros(cls, d_sae: int, rows: tuple[int, int] | None = None) -> HalfSums:
        lo, hi = rows or (0, d_sae)
        if not 0 <= lo < hi <= d_sae:
            raise ValueError(f"rows {lo}..{hi} are not a block of {d_sae} concepts")
        block = (hi - lo, d_sae)
        return cls(
            np.zeros(block),
            np.zeros(block),
            np.zeros(block, dtype=np.int32),
            np.zeros(d_sae),
            np.zeros(d_sae, dtype=np.int64),
            np.zeros(d_sae, dtype=np.int64),
            np.zeros(d_sae),
            rows=(lo, hi),
        )

    def add(self, other: HalfSums) -> None:
        for name in (*_MATRICES, *_VECTORS):
            getattr(self, name).__iadd__(getattr(other, name))
        self.patches += other.patches
        self.image_count += other.image_count

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """The sums as safetensors entries, matrices in 32 bits (the reduce sums in 64): dense
        when more than a quarter of the pairs co-occurred in an image, else the values at
        those pairs only (one flat index j*m + j' shared by the three matrices)."""
        out = {f"{prefix}.{name}": getattr(self, name) for name in _VECTORS}
        out[f"{prefix}.counts"] = np.array([self.patches, self.image_count], dtype=np.int64)
        out[f"{prefix}.rows"] = np.array(self.rows, dtype=np.int64)
        seen = self.pair_images != 0
        seen |= self.numerator != 0
        seen |= self.baseline != 0
        flat = seen.reshape(-1)
        dense = np.count_nonzero(flat) > flat.size // 4
        index = None if dense else np.flatnonzero(flat)
        if index is not None:
            out[f"{prefix}.index"] = index.astype(np.int32) if flat.size < 2**31 else index
        for name in _MATRICES:
            matrix = getattr(self, name)
            small = np.int32 if name == "pair_images" else np.float32
            values = matrix if index is None else matrix.reshape(-1)[index]
            out[f"{prefix}.{name}"] = values.astype(small)
        return out

    def add_tensors(self, saved: dict[str, np.ndarray], prefix: str) -> None:
        rows = tuple(int(v) for v in saved[f"{prefix}.rows"])
        if rows != self.rows:
            raise ValueError(f"a partial of concepts {rows} added to one of {self.rows}")
        for name in _VECTORS:
            getattr(self, name).__iadd__(saved[f"{prefix}.{name}"])
        patches, image_count = (int(v) for v in saved[f"{prefix}.counts"])
        self.patches += patches
        self.image_count += image_count
        index = saved.get(f"{prefix}.index")
        for name in _MATRICES:
            matrix = getattr(self, name)
            if index is None:
                matrix += saved[f"{prefix}.{name}"]
            else:
                matrix.reshape(-1)[index] += saved[f"{prefix}.{name}"]


@dataclass
class CooccurrencePartial:
    """What a partial job sums: :class:`HalfSums` of its even and of its odd shards."""

    halves: tuple[HalfSums, HalfSums]

    @classmethod
    def zeros(cls, d_sae: int, rows: tuple[int, int] | None = None) -> CooccurrencePartial:
        return cls((HalfSums.zeros(d_sae, rows), HalfSums.zeros(d_sae, rows)))

    @property
    def d_sae(self) -> int:
        return len(self.halves[0].total)

    @property
    def rows(self) -> tuple[int, int]:
        return self.halves[0].rows

    def whole(self) -> HalfSums:
        """Both halves summed (a new accumulator set: for tests and small m)."""
        merged = HalfSums.zeros(self.d_sae, self.rows)
        for half in self.halves:
            merged.add(half)
        return merged

    @property
    def total(self) -> np.ndarray:
        return self.halves[0].total + self.halves[1].total

    @property
    def frequency(self) -> np.ndarray:
        return self.halves[0].frequency + self.halves[1].frequency

    @property
    def patches(self) -> int:
        return self.halves[0].patches + self.halves[1].patches

    def confidence(self) -> np.ndarray:
        """Dense D (Eq. 5), the partial's rows; rows of concepts that never fire are 0."""
        lo, hi = self.rows
        numerator = self.halves[0].numerator + self.halves[1].numerator
        return safe_ratio(numerator, self.total[lo:hi, None])

    def add(self, other: CooccurrencePartial) -> None:
        for mine, theirs in zip(self.halves, other.halves, strict=True):
            mine.add(theirs)

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        tensors: dict[str, np.ndarray] = {}
        for name, half in zip(HALVES, self.halves, strict=True):
            tensors.update(half.tensors(name))
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> CooccurrencePartial:
        m, rows = partial_shape(path)
        partial = cls.zeros(m, rows)
        partial.add_file(path)
        return partial

    def add_file(self, path: str | Path) -> None:
        """Add a saved partial into this one (the reduce step; no dense copy of the file)."""
        from safetensors.numpy import load_file

        saved = load_file(str(path))
        if "even.rows" not in saved:
            raise ValueError(f"{path}: not a co-occurrence partial of this version (rerun it)")
        m = len(saved["even.total"])
        if m != self.d_sae:
            raise ValueError(f"{path}: partial for {m} concepts, expected {self.d_sae}")
        for name, half in zip(HALVES, self.halves, strict=True):
            half.add_tensors(saved, name)


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` (broadcast, float64), 0 where the denominator is not
    positive: a concept that never fires has a zero row of D, a zero D0 and no coverage."""
    numerator, denominator = np.broadcast_arrays(
        np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    )
    out = np.zeros(numerator.shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def partial_shape(path: str | Path) -> tuple[int, tuple[int, int]]:
    """The concepts m of a saved partial and the block of rows [lo, hi) it holds."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        if "even.rows" not in handle.keys():
            raise ValueError(f"{path}: not a co-occurrence partial of this version (rerun it)")
        m = len(handle.get_tensor("even.total"))
        lo, hi = (int(v) for v in handle.get_tensor("even.rows"))
    return m, (lo, hi)


def concept_blocks(d_sae: int, blocks: int) -> list[tuple[int, int]]:
    """``blocks`` consecutive ranges of concepts covering [0, d_sae), sizes differing by
    at most one."""
    if not 1 <= blocks <= d_sae:
        raise ValueError(f"hierarchy.concept_blocks must be in 1..{d_sae}, not {blocks}")
    edges = [d_sae * b // blocks for b in range(blocks + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def reduce_partials(
    paths: Iterable[str | Path], d_sae: int, rows: tuple[int, int] | None = None
) -> CooccurrencePartial:
    total = CooccurrencePartial.zeros(d_sae, rows)
    for path in paths:
        total.add_file(path)
    return total


def reduce_blocks(
    paths: Iterable[str | Path], d_sae: int, floor: float
) -> tuple[pa.Table, pa.Table]:
    """``cooccurrence.parquet`` and ``totals.parquet`` from partials of one or more blocks
    of rows, one block in memory at a time; every concept's row must be covered once."""
    by_block: dict[tuple[int, int], list[str | Path]] = {}
    for path in paths:
        m, rows = partial_shape(path)
        if m != d_sae:
            raise ValueError(f"{path}: partial for {m} concepts, expected {d_sae}")
        by_block.setdefault(rows, []).append(path)
    blocks = sorted(by_block)
    starts = [lo for lo, _ in blocks]
    if not blocks or starts != [0, *(hi for _, hi in blocks[:-1])] or blocks[-1][1] != d_sae:
        raise ValueError(f"the partials' blocks {blocks} do not cover concepts 0..{d_sae} once")
    tables, totals = [], []
    for rows in blocks:
        partial = reduce_partials(by_block[rows], d_sae, rows)
        tables.append(cooccurrence_table(partial, floor))
        totals.append(totals_table(partial))
        del partial
    return pa.concat_tables(tables), pa.concat_tables(totals)


def cooccurrence_table(
    partial: CooccurrencePartial, floor: float, rows_per_block: int = 512
) -> pa.Table:
    """Off-diagonal entries of D with ``D >= floor`` (all non-zero ones at floor 0), with
    D0, the images where both fire and each half's D and D0; built a block of rows at a
    time, so no whole m x m copy is made beyond the halves' own sums."""
    even, odd = partial.halves
    first, last = partial.rows
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COOCCURRENCE_SCHEMA.names}
    for lo in range(0, last - first, rows_per_block):
        rows = slice(lo, lo + rows_per_block)  # of the matrices: concepts first + lo, ...
        total = (even.total + odd.total)[first:last][rows]
        d = safe_ratio(even.numerator[rows] + odd.numerator[rows], total[:, None])
        np.fill_diagonal(d[:, first + lo :], 0.0)
        concept, other = np.nonzero(d >= floor) if floor > 0 else np.nonzero(d > 0)
        at = (concept, other)
        parts["concept"].append(concept + first + lo)
        parts["other"].append(other)
        parts["confidence"].append(d[at])
        baseline = (even.baseline[rows] + odd.baseline[rows])[at]
        parts["baseline"].append(safe_ratio(baseline, total[concept]))
        parts["images"].append((even.pair_images[rows] + odd.pair_images[rows])[at])
        for name, half in zip(HALVES, partial.halves, strict=True):
            half_total = half.total[first:last][rows][concept]
            parts[f"confidence_{name}"].append(safe_ratio(half.numerator[rows][at], half_total))
            parts[f"baseline_{name}"].append(safe_ratio(half.baseline[rows][at], half_total))
    return pa.table(
        {
            field.name: pa.array(
                np.concatenate(parts[field.name]).astype(field.type.to_pandas_dtype())
            )
            for field in COOCCURRENCE_SCHEMA
        },
        schema=COOCCURRENCE_SCHEMA,
    )


def totals_table(partial: CooccurrencePartial) -> pa.Table:
    """Per concept of the partial's rows: total activation, patches and images where it
    fires, its mean share of its images' patches (``coverage``) and its images in each half."""
    lo, hi = partial.rows
    even, odd = (half.images[lo:hi] for half in partial.halves)
    whole_images = even + odd
    coverage = (partial.halves[0].coverage + partial.halves[1].coverage)[lo:hi]
    return pa.table(
        {
            "concept": np.arange(lo, hi, dtype=np.int32),
            "total_activation": partial.total[lo:hi],
            "frequency": partial.frequency[lo:hi],
            "images": whole_images,
            "coverage": safe_ratio(coverage, whole_images.astype(np.float64)),
            "images_even": even,
            "images_odd": odd,
        },
        schema=TOTALS_SCHEMA,
    )
