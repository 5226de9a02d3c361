"""The streaming pass of the co-occurrence stage: concept shards read through DuckDB,
whole images at a time, into the sums of :mod:`insight.hierarchy.cooccurrence` (compiled
numba loops, two threads on disjoint rows of the accumulators)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from insight.features.shards import shard_grid
from insight.hierarchy.cooccurrence import CooccurrencePartial, HalfSums


@numba.njit(nogil=True, cache=True)
def _add_pairs(numerator, starts, concepts, activations, lo, hi, offset):  # pragma: no cover
    """For every patch p (rows starts[p]..starts[p+1]) and every concept j in [lo, hi)
    active on it: numerator[j - offset, j'] += A[j, p] for each concept j' active on p
    (``offset``: the first concept of the block the matrix holds)."""
    for p in range(len(starts) - 1):
        begin, end = starts[p], starts[p + 1]
        for a in range(begin, end):
            j = concepts[a]
            if j < lo or j >= hi:
                continue
            weight = np.float64(activations[a])
            row = numerator[j - offset]
            for b in range(begin, end):
                row[concepts[b]] += weight


@numba.njit(nogil=True, cache=True)
def _add_images(
    baseline,
    pair_images,
    images,
    coverage,
    image_starts,
    concepts,
    activations,
    grid,
    lo,
    hi,
    offset,
):  # pragma: no cover - compiled
    """For every image g (rows image_starts[g]..image_starts[g+1]): each concept j in
    [lo, hi) firing in g adds W_j(g) n_j'(g) / P_g to baseline[j - offset, j'] and 1 to
    pair_images[j - offset, j'] for each concept j' firing in g (a patch lists a concept
    once)."""
    m = baseline.shape[1]
    mass = np.zeros(m)
    count = np.zeros(m, dtype=np.int64)
    seen = np.empty(m, dtype=np.int64)
    for g in range(len(image_starts) - 1):
        n_seen = 0
        for a in range(image_starts[g], image_starts[g + 1]):
            j = concepts[a]
            if count[j] == 0:
                seen[n_seen] = j
                n_seen += 1
            count[j] += 1
            mass[j] += activations[a]
        for x in range(n_seen):
            j = seen[x]
            if j < lo or j >= hi:
                continue
            images[j] += 1
            coverage[j] += count[j] / grid
            share = mass[j] / grid
            row = j - offset
            for y in range(n_seen):
                other = seen[y]
                baseline[row, other] += share * count[other]
                pair_images[row, other] += 1
        for x in range(n_seen):
            mass[seen[x]] = 0.0
            count[seen[x]] = 0


def accumulate(
    half: HalfSums,
    image_of_row: np.ndarray,
    patch_of_row: np.ndarray,
    concepts: np.ndarray,
    activations: np.ndarray,
    patches_per_image: int,
) -> None:
    """Add whole images into ``half``: rows grouped by image and, within it, by patch
    (``image_of_row`` and ``patch_of_row`` non-decreasing from 0, the patch index running
    over all images). Every ordered pair (j, j') of concepts on the same patch adds A[j, i]
    to ``numerator[j, j']`` (j = j' included: the diagonal is the total); every pair in the
    same image adds to ``baseline`` and ``pair_images``.

    Only the rows of ``half.rows`` are summed (one block of concepts; all by default).
    Compiled loops (numba); two threads own disjoint row ranges of the accumulators, split
    so each has about half of the pairs (no races, no atomics).
    """
    m = len(half.total)
    first, last = half.rows
    if len(concepts) == 0:
        return
    n_patches = int(patch_of_row[-1]) + 1
    n_images = int(image_of_row[-1]) + 1
    count = np.bincount(patch_of_row, minlength=n_patches)
    starts = np.concatenate([[0], np.cumsum(count)])
    image_starts = np.concatenate([[0], np.cumsum(np.bincount(image_of_row, minlength=n_images))])
    concepts = np.ascontiguousarray(concepts, dtype=np.int32)
    activations = np.ascontiguousarray(activations, dtype=np.float32)
    work = np.cumsum(np.bincount(concepts, weights=count[patch_of_row], minlength=m)[first:last])
    split = first + int(np.searchsorted(work, work[-1] / 2))

    def run(lo: int, hi: int) -> None:
        _add_pairs(half.numerator, starts, concepts, activations, lo, hi, first)
        _add_images(
            half.baseline,
            half.pair_images,
            half.images,
            half.coverage,
            image_starts,
            concepts,
            activations,
            float(patches_per_image),
            lo,
            hi,
            first,
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: run(*r), [(first, split), (split, last)]))
    half.total += np.bincount(concepts, weights=activations.astype(np.float64), minlength=m)
    half.frequency += np.bincount(concepts, minlength=m)
    half.patches += n_patches
    half.image_count += n_images


def runs(*keys: np.ndarray) -> np.ndarray:
    """0-based run index of each row, a new run wherever any key changes."""
    if len(keys[0]) == 0:
        return np.zeros(0, dtype=np.int64)
    changed = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        changed |= key[1:] != key[:-1]
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


def shard_half(path: str | Path) -> int:
    """0 for an even shard number (``shard-00004.parquet``), 1 for an odd one."""
    found = re.search(r"(\d+)\.parquet$", Path(path).name)
    if found is None:
        raise ValueError(f"{path}: a concept shard's name ends in its number (shard-00004.parquet)")
    return int(found.group(1)) % 2


def shards_partial(
    paths: Iterable[str | Path],
    d_sae: int,
    min_activation: float = 0.0,
    rows_per_batch: int = 1_000_000,
    rows: tuple[int, int] | None = None,
) -> CooccurrencePartial:
    """The partial sums of some concept shards (one partial job), each shard into the half
    of its number's parity, for the concepts ``rows`` = [lo, hi) (all by default: one
    block of ``hierarchy.concept_blocks``). Each shard streams through DuckDB; an image cut
    between two batches is carried over to the next one."""
    partial = CooccurrencePartial.zeros(d_sae, rows)
    for path in paths:
        half = partial.halves[shard_half(path)]
        grid = shard_grid(path)
        patches_per_image = grid[0] * grid[1]
        carry: pa.Table | None = None
        for batch in concept_batches(path, min_activation, rows_per_batch):
            table = pa.Table.from_batches([batch])
            if carry is not None:
                table = pa.concat_tables([carry, table])
            table = table.combine_chunks()
            keys = table["image_key"].to_numpy()
            image_runs = runs(keys)
            last = int(np.searchsorted(image_runs, image_runs[-1]))  # may go on in the next batch
            _accumulate_table(half, table.slice(0, last), d_sae, patches_per_image)
            carry = table.slice(last)
        if carry is not None and carry.num_rows:
            _accumulate_table(half, carry.combine_chunks(), d_sae, patches_per_image)
    return partial


def _accumulate_table(half: HalfSums, table: pa.Table, d_sae: int, patches_per_image: int) -> None:
    if table.num_rows == 0:
        return
    concepts = table["concept"].to_numpy()
    if concepts.min() < 0 or concepts.max() >= d_sae:
        raise ValueError(
            f"concept ids must be in [0, {d_sae}); got {concepts.min()}..{concepts.max()}"
        )
    keys, patches = table["image_key"].to_numpy(), table["patch"].to_numpy()
    accumulate(
        half,
        runs(keys),
        runs(keys, patches),
        concepts,
        table["activation"].to_numpy().astype(np.float64),
        patches_per_image,
    )
