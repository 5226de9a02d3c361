"""Each concept's example images for the browser: its top images by peak activation and
images from around the 25%, 50% and 75% ranks (Neuronpedia-style quantile bands), with
all their patch activations of the concept. The shards are read one at a time; per
concept memory holds its top images and a bounded hash-drawn sample of its images."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

QUANTILE_BANDS = (("q25", "25% rank", 0.25), ("q50", "median", 0.5), ("q75", "75% rank", 0.75))


EXAMPLE_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("image_id", pa.string()),
        ("band", pa.string()),
        ("peak", pa.float32()),
        ("patches", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())),
    ]
)


BAND_SAMPLE = 256  # images per concept the quantile bands are read from (all when fewer)
COMPACT_ROWS = 1 << 20  # (concept, image) rows gathered before the sample is cut back
UNFILLED = np.iinfo(np.uint64).max  # the priority bound of a concept whose sample is not full
BY_PEAK = [("peak", "descending"), ("priority", "ascending")]  # ties: the hash, any sharding


def _priorities(names: pa.Array, image: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """The priority of each (concept, image) row: splitmix64's finaliser of the image name's
    8-byte blake2b digest (little-endian) xor the concept times 0x9E3779B97F4A7C15. It draws
    the band sample and breaks ties between equal peaks, the same in any shard order."""
    digest = np.array(
        [
            int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
            for name in names.to_pylist()
        ],
        dtype=np.uint64,
    )
    return _mix(digest[image] ^ (concept.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))


def _shard_peaks(path: str) -> pa.Table:
    """One shard's peak activation per (concept, image): ``concept``, ``peak`` and
    ``priority`` (:func:`_priorities`), which stands for the image until the patches are
    read (16 bytes a row). A shard holds whole images (file contract), so these are the
    images' peaks."""
    table = pq.read_table(path, columns=["image_id", "concept", "activation"])
    images = pc.dictionary_encode(table["image_id"]).combine_chunks()
    peaks = (
        pa.table(
            {
                "concept": table["concept"],
                "image": images.indices,
                "activation": table["activation"],
            }
        )
        .group_by(["concept", "image"], use_threads=False)
        .aggregate([("activation", "max")])
    )
    concept = peaks["concept"].to_numpy()
    return pa.table(
        {
            "concept": peaks["concept"].cast(pa.int32()),
            "peak": peaks["activation_max"].cast(pa.float32()),
            "priority": _priorities(images.dictionary, peaks["image"].to_numpy(), concept),
        }
    )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit priorities from any 64-bit keys."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _first_per_concept(table: pa.Table, keys: list[tuple[str, str]], count: int) -> pa.Table:
    """The first ``count`` rows of each concept in the order ``keys``, with their ``rank``
    (1-based) within the concept."""
    if table.num_rows == 0:
        return table.append_column("rank", pa.array([], pa.int64()))
    table = table.sort_by([("concept", "ascending"), *keys])
    concept = table["concept"].to_numpy()
    starts = np.flatnonzero(np.r_[True, concept[1:] != concept[:-1]])
    rank = np.arange(len(concept)) - np.repeat(starts, np.diff(np.r_[starts, len(concept)])) + 1
    keep = rank <= count
    return table.filter(pa.array(keep)).append_column("rank", pa.array(rank[keep]))


def top_activations(
    concept_files: Iterable[str | Path],
    per_concept: int,
    per_band: int = 0,
    sample: int = BAND_SAMPLE,
) -> pa.Table:
    """For every concept, its ``per_concept`` images with the highest peak activation
    (``band`` = ``top``) and, with ``per_band``, that many images from around the 25%, 50%
    and 75% ranks of its images by peak (``q25``, ``q50``, ``q75``), each with all of the
    image's patch activations of the concept: ``concept``, ``image_id``, ``band``, ``peak``,
    ``patches`` (list), ``activations`` (list). Equal peaks rank by :func:`_priorities`.

    The shards are read one at a time, twice, so memory holds per concept its top images
    and a sample of ``sample`` of its images (a bottom-k sketch on the priority, the same
    for any shard order; 16 bytes an image): for a concept on ``sample`` images or fewer
    the bands are exact ranks of all its images, for one on more they are those ranks
    within the sample, off the true rank by about ``sqrt(q (1 - q) / sample)`` of its
    images (3% at the default 256)."""
    files = [str(p) for p in concept_files]
    if not files:
        return EXAMPLE_SCHEMA.empty_table()
    top = sampled = None
    pending: list[pa.Table] = []
    cutoff = None
    for path in files:
        peaks = _shard_peaks(path)
        top = _first_per_concept(
            pa.concat_tables([t for t in (top, peaks) if t is not None]), BY_PEAK, per_concept
        ).drop_columns(["rank"])
        if per_band:
            if cutoff is not None:  # a concept's full sample only takes lower priorities
                concept = peaks["concept"].to_numpy()
                inside = concept < len(cutoff)
                bound = np.where(inside, cutoff[np.minimum(concept, len(cutoff) - 1)], UNFILLED)
                peaks = peaks.filter(pa.array(peaks["priority"].to_numpy() <= bound))
            pending.append(peaks)
            if sum(t.num_rows for t in pending) > max(
                sampled.num_rows if sampled else 0, COMPACT_ROWS
            ):
                sampled = _sample(sampled, pending, sample)
                pending, cutoff = [], _cutoffs(sampled, sample)
    chosen = [top.append_column("band", pa.array(["top"] * top.num_rows, pa.string()))]
    if per_band:
        sampled = _sample(sampled, pending, sample)
        chosen.append(_bands(sampled, per_concept, per_band))
    return _with_patches(files, _first_band_per_image(pa.concat_tables(chosen)))


def _cutoffs(sampled: pa.Table, size: int) -> np.ndarray:
    """Per concept, the largest priority in its sample when it holds ``size`` rows (no
    later row above it can enter), else no bound."""
    concept = sampled["concept"].to_numpy()
    cutoff = np.full(int(concept.max(initial=-1)) + 1, UNFILLED, np.uint64)
    full = np.bincount(concept, minlength=len(cutoff)) >= size
    priority = sampled["priority"].to_numpy()
    highest = np.zeros(len(cutoff), np.uint64)
    np.maximum.at(highest, concept, priority)
    cutoff[full] = highest[full]
    return cutoff


def _sample(sampled: pa.Table | None, pending: list[pa.Table], size: int) -> pa.Table:
    """Each concept's ``size`` (concept, image) rows of lowest priority so far."""
    rows = pa.concat_tables([t for t in (sampled, *pending) if t is not None])
    return _first_per_concept(rows, [("priority", "ascending")], size).drop_columns(["rank"])


def _bands(sampled: pa.Table, per_concept: int, per_band: int) -> pa.Table:
    """The rows at each quantile band's ranks of each concept's sample (by peak): ranks
    ``floor(n q) + 1`` to ``floor(n q) + per_band`` past the first ``per_concept``, the
    first band that claims a rank taking it."""
    ranked = _first_per_concept(sampled, BY_PEAK, sampled.num_rows)
    concept = ranked["concept"].to_numpy()
    rank = ranked["rank"].to_numpy()
    n = np.bincount(concept, minlength=int(concept.max(initial=0)) + 1)[concept]
    band = np.full(len(rank), "", dtype=object)
    for name, _, q in reversed(QUANTILE_BANDS):  # the first band wins: write it last
        start = np.floor(n * q)
        band[(rank > per_concept) & (rank > start) & (rank <= start + per_band)] = name
    keep = band != ""
    return (
        ranked.filter(pa.array(keep))
        .drop_columns(["rank"])
        .append_column("band", pa.array(band[keep].tolist(), pa.string()))
    )


def _first_band_per_image(chosen: pa.Table) -> pa.Table:
    """One row per (concept, image), the earliest band (top first), in the pages' order:
    by concept, then by peak."""
    order = {"top": 0, **{name: i + 1 for i, (name, _, _) in enumerate(QUANTILE_BANDS)}}
    chosen = chosen.append_column(
        "band_order", pa.array([order[b] for b in chosen["band"].to_pylist()], pa.int8())
    ).sort_by([("concept", "ascending"), ("priority", "ascending"), ("band_order", "ascending")])
    concept, priority = chosen["concept"].to_numpy(), chosen["priority"].to_numpy()
    first = np.r_[True, (concept[1:] != concept[:-1]) | (priority[1:] != priority[:-1])]
    return (
        chosen.filter(pa.array(first))
        .sort_by([("concept", "ascending"), ("band_order", "ascending"), *BY_PEAK])
        .drop_columns(["band_order"])
    )


def _with_patches(files: list[str], chosen: pa.Table) -> pa.Table:
    """The chosen (concept, priority) rows with their image and every patch activation of
    the concept in it, in the order of ``chosen``; the shards read one at a time, and of
    each only the matching (row, patch, activation) and one image name per row kept."""
    chosen = chosen.append_column("order", pa.array(np.arange(chosen.num_rows)))
    pieces, image_ids = [], np.full(chosen.num_rows, None, dtype=object)
    seen = np.zeros(chosen.num_rows, bool)
    for path in files:
        rows = pq.read_table(path, columns=["image_id", "patch", "concept", "activation"])
        images = pc.dictionary_encode(rows["image_id"]).combine_chunks()
        image = images.indices.to_numpy()
        matched = (
            pa.table(
                {
                    "concept": rows["concept"],
                    "priority": _priorities(images.dictionary, image, rows["concept"].to_numpy()),
                    "image": image,
                    "patch": rows["patch"],
                    "activation": rows["activation"],
                }
            )
            .join(
                chosen.select(["concept", "priority", "order"]),
                ["concept", "priority"],
                join_type="inner",
            )
            .combine_chunks()
        )
        # each chosen row must meet one image, in one shard: else two images collided
        found = np.unique(
            np.stack([matched["order"].to_numpy(), matched["image"].to_numpy()], axis=1), axis=0
        )
        touched = found[:, 0]
        if (touched[1:] == touched[:-1]).any() or seen[touched].any():
            raise RuntimeError("two images of one concept share a 64-bit priority; rename one")
        names = images.dictionary.to_numpy(zero_copy_only=False)
        image_ids[touched], seen[touched] = names[found[:, 1]], True
        pieces.append(matched.select(["order", "patch", "activation"]))
    rows = pa.concat_tables(pieces).sort_by([("order", "ascending"), ("patch", "ascending")])
    offsets = pa.array(
        np.r_[0, np.cumsum(np.bincount(rows["order"].to_numpy(), minlength=chosen.num_rows))],
        pa.int32(),
    )
    return pa.table(
        {
            "concept": chosen["concept"],
            "image_id": pa.array(image_ids, pa.string()),
            "band": chosen["band"],
            "peak": chosen["peak"],
            "patches": pa.ListArray.from_arrays(offsets, rows["patch"].combine_chunks()),
            "activations": pa.ListArray.from_arrays(offsets, rows["activation"].combine_chunks()),
        }
    ).cast(EXAMPLE_SCHEMA)
