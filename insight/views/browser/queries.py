"""What the browser shows, read from the run's tables: one record per concept with its
family, its activation histogram, and the per-patch activations an image page draws (the
example images are :mod:`insight.views.browser.examples`). The concept shards are read
one at a time; nothing is loaded whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from insight.hierarchy.families import direct_edges, family_graph
from insight.views.heatmaps import concept_label

HISTOGRAM_BINS = 24


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
