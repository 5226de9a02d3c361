"""What the browser shows, read from the run's tables: one record per concept with its
family, each concept's top images and quantile bands (Neuronpedia style), its activation
histogram, and the per-patch activations an image page draws. DuckDB reads the concept
shards one at a time; nothing is loaded whole."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from insight.hierarchy.families import direct_edges, family_graph
from insight.views.heatmaps import concept_label

HISTOGRAM_BINS = 24
QUANTILE_BANDS = (("q25", "25% rank", 0.25), ("q50", "median", 0.5), ("q75", "75% rank", 0.75))


@dataclass
class ConceptInfo:
    """What the index and a concept page show of one concept."""

    concept: int
    name: str | None
    group: int
    frequency: int
    score: float | None
    runner_up: list[str]
    parents: list[int]
    children: list[int]
    runner_up_scores: list[float] = field(default_factory=list)
    display: str = ""
    implied_parents: list[int] = field(default_factory=list)
    implied_children: list[int] = field(default_factory=list)
    coverage: float | None = None  # mean share of its images' patches it fires on
    dense: bool = False

    @property
    def dead(self) -> bool:
        return self.frequency == 0


def concept_infos(
    names: pa.Table,
    families: pa.Table | None,
    totals: pa.Table | None = None,
    dense_coverage: float = 0.5,
) -> list[ConceptInfo]:
    """One record per concept of ``names.parquet``, with its direct parents and children,
    those only implied by a longer path, its coverage (``totals.parquet``; dense at
    ``dense_coverage`` or more) and a display name that tells apart concepts sharing a
    name (``sand #212``)."""
    graph = family_graph(families)
    direct = direct_edges(graph)
    coverage = (
        dict(zip(totals["concept"].to_pylist(), totals["coverage"].to_pylist(), strict=True))
        if totals is not None
        else {}
    )
    shared = Counter(n for n in names["name"].to_pylist() if n)
    infos = []
    for row in names.to_pylist():
        concept, name = row["concept"], row.get("name")
        inside = concept in graph
        display = concept_label(concept, name)
        if name and shared[name] > 1:
            display = f"{name} #{concept}"
        infos.append(
            ConceptInfo(
                concept=concept,
                name=name,
                group=row.get("group", 0),
                frequency=row.get("frequency", 0),
                score=row.get("score"),
                runner_up=list(row.get("runner_up") or []),
                parents=sorted(direct.predecessors(concept)) if inside else [],
                children=sorted(direct.successors(concept)) if inside else [],
                runner_up_scores=list(row.get("runner_up_scores") or []),
                display=display,
                implied_parents=sorted(
                    set(graph.predecessors(concept)) - set(direct.predecessors(concept))
                )
                if inside
                else [],
                implied_children=sorted(
                    set(graph.successors(concept)) - set(direct.successors(concept))
                )
                if inside
                else [],
                coverage=coverage.get(concept),
                dense=coverage.get(concept, 0.0) >= dense_coverage,
            )
        )
    return infos


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


BAND_SAMPLE = 1024  # images per concept the quantile bands are read from (all when fewer)
COMPACT_ROWS = 1 << 20  # (concept, image) rows gathered before the sample is cut back
UNFILLED = np.iinfo(np.uint64).max  # the priority bound of a concept whose sample is not full


def _shard_peaks(path: str) -> pa.Table:
    """One shard's peak activation per (concept, image): ``concept``, ``image_id``,
    ``peak`` and ``priority``, a hash of (concept, image) that draws the band sample. A shard
    holds whole images (file contract), so these are the images' peaks."""
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
    names = images.dictionary
    digest = np.array(
        [
            int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
            for name in names.to_pylist()
        ],
        dtype=np.uint64,
    )
    concept = peaks["concept"].to_numpy()
    image = peaks["image"].to_numpy()
    priority = _mix(digest[image] ^ (concept.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
    return pa.table(
        {
            "concept": peaks["concept"].cast(pa.int32()),
            "image_id": names.take(peaks["image"]),
            "peak": peaks["activation_max"].cast(pa.float32()),
            "priority": priority,
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


BY_PEAK = [("peak", "descending"), ("image_id", "ascending")]


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
    ``patches`` (list), ``activations`` (list).

    The shards are read one at a time, twice, so memory holds per concept its top images
    and a sample of ``sample`` of its images (a bottom-k sketch on a hash of concept and
    image, the same for any shard order): for a concept on ``sample`` images or fewer the
    bands are exact ranks of all its images, for one on more they are those ranks within
    the sample, off the true rank by about ``sqrt(q (1 - q) / sample)`` of its images."""
    files = [str(p) for p in concept_files]
    if not files:
        return EXAMPLE_SCHEMA.empty_table()
    top = sampled = None
    pending: list[pa.Table] = []
    cutoff = None
    for path in files:
        peaks = _shard_peaks(path)
        top = _first_per_concept(
            pa.concat_tables([t for t in (top, peaks.drop_columns(["priority"])) if t is not None]),
            BY_PEAK,
            per_concept,
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
        sampled = _sample(sampled, pending, sample).drop_columns(["priority"])
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
    ).sort_by([("concept", "ascending"), ("image_id", "ascending"), ("band_order", "ascending")])
    concept, image = chosen["concept"].to_numpy(), chosen["image_id"].to_numpy()
    first = np.r_[True, (concept[1:] != concept[:-1]) | (image[1:] != image[:-1])]
    return (
        chosen.filter(pa.array(first))
        .sort_by([("concept", "ascending"), ("band_order", "ascending"), *BY_PEAK])
        .drop_columns(["band_order"])
    )


def _with_patches(files: list[str], chosen: pa.Table) -> pa.Table:
    """The chosen (concept, image) rows with every patch activation of the concept in the
    image, in the order of ``chosen``; the shards read one at a time."""
    chosen = chosen.append_column("order", pa.array(np.arange(chosen.num_rows)))
    pieces = []
    for path in files:
        rows = pq.read_table(path, columns=["image_id", "patch", "concept", "activation"])
        pieces.append(
            rows.join(
                chosen.select(["concept", "image_id", "order"]),
                ["concept", "image_id"],
                join_type="inner",
            ).select(["order", "patch", "activation"])
        )
    rows = pa.concat_tables(pieces).sort_by([("order", "ascending"), ("patch", "ascending")])
    counts = np.bincount(rows["order"].to_numpy(), minlength=chosen.num_rows)
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    return pa.table(
        {
            "concept": chosen["concept"],
            "image_id": chosen["image_id"],
            "band": chosen["band"],
            "peak": chosen["peak"],
            "patches": pa.ListArray.from_arrays(offsets, rows["patch"].combine_chunks()),
            "activations": pa.ListArray.from_arrays(offsets, rows["activation"].combine_chunks()),
        }
    ).cast(EXAMPLE_SCHEMA)


def activation_histograms(
    concept_files: Iterable[str | Path], bins: int = HISTOGRAM_BINS
) -> dict[int, tuple[float, list[int]]]:
    """Per concept: its largest activation and the counts of its activations in ``bins``
    equal bins from 0 to that value. Two passes over the shards, one shard at a time."""
    files = [str(p) for p in concept_files]
    peak = np.zeros(0, np.float32)
    for path in files:
        rows = pq.read_table(path, columns=["concept", "activation"])
        if rows.num_rows == 0:
            continue
        shard = rows.group_by("concept", use_threads=False).aggregate([("activation", "max")])
        concept = shard["concept"].to_numpy()
        if concept.max() >= len(peak):
            peak = np.pad(peak, (0, int(concept.max()) + 1 - len(peak)))
        np.maximum.at(peak, concept, shard["activation_max"].to_numpy())
    counts = np.zeros((len(peak), bins), np.int64)
    for path in files:
        rows = pq.read_table(path, columns=["concept", "activation"])
        concept = rows["concept"].to_numpy().astype(np.int64)
        activation = rows["activation"].to_numpy()
        live = peak[concept] > 0
        concept, activation = concept[live], activation[live]
        which = np.minimum(np.floor(activation / peak[concept] * np.float32(bins)), bins - 1)
        counts += np.bincount(
            concept * bins + which.astype(np.int64), minlength=counts.size
        ).reshape(counts.shape)
    return {
        int(c): (float(peak[c]), counts[c].tolist()) for c in np.flatnonzero(counts.sum(axis=1))
    }


def image_activations(concept_files: Sequence[str | Path], image_ids: Sequence[str]) -> pa.Table:
    """Every (image_id, patch, concept, activation) of the given images, from the shards."""
    if not concept_files or not image_ids:
        return pa.table({"image_id": [], "patch": [], "concept": [], "activation": []})
    connection = duckdb.connect()
    connection.register("wanted", pa.table({"image_id": list(image_ids)}))
    return connection.sql(
        """
        select image_id, patch, concept, activation from read_parquet(?)
        where image_id in (select image_id from wanted)
        order by image_id, patch, activation desc
        """,
        params=[[str(p) for p in concept_files]],
    ).to_arrow_table()


def image_page_data(
    rows: Sequence[dict], grid: tuple[int, int], infos: Mapping[int, ConceptInfo], top: int = 10
) -> dict:
    """What an image page's script reads: per patch its concepts and activations (largest
    first), per concept its heatmap, display names and the image's top concepts by share."""
    patches: dict[int, list] = {}
    heatmaps: dict[int, dict[int, float]] = {}
    totals: Counter = Counter()
    for row in rows:
        patches.setdefault(row["patch"], []).append([row["concept"], row["activation"]])
        heatmaps.setdefault(row["concept"], {})[row["patch"]] = row["activation"]
        totals[row["concept"]] += row["activation"]
    total = sum(totals.values()) or 1.0
    ranked = [c for c, _ in totals.most_common(top)]
    names = {c: infos[c].display if c in infos else concept_label(c, None) for c in heatmaps}
    summary = [
        {
            "concept": c,
            "display": names[c],
            "share": totals[c] / total,
            "patches": len(heatmaps[c]),
        }
        for c in ranked
    ]
    data = {
        "grid": list(grid),
        "patches": patches,
        "heatmaps": heatmaps,
        "names": names,
        "top": ranked,
    }
    return {"data": data, "top": summary}
