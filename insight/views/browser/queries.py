"""What the browser shows, read from the run's tables: one record per concept with its
family, each concept's top images and quantile bands (Neuronpedia style), its activation
histogram, and the per-patch activations an image page draws. DuckDB reads the concept
shards in place; nothing is loaded whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

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


def top_activations(
    concept_files: Iterable[str | Path], per_concept: int, per_band: int = 0
) -> pa.Table:
    """For every concept, its ``per_concept`` images with the highest peak activation
    (``band`` = ``top``) and, with ``per_band``, that many images from around the 25%, 50%
    and 75% ranks of its images by peak (``q25``, ``q50``, ``q75``), each with all of the
    image's patch activations of the concept: ``concept``, ``image_id``, ``band``, ``peak``,
    ``patches`` (list), ``activations`` (list)."""
    files = [str(p) for p in concept_files]
    if not files:
        return EXAMPLE_SCHEMA.empty_table()
    bands = " ".join(
        f"when rank > {per_concept} and rank > floor(n * {q}) and rank <= floor(n * {q}) + {per_band} then '{band}'"
        for band, _, q in QUANTILE_BANDS
    )
    connection = duckdb.connect()
    return (
        connection.sql(
            f"""
        with rows as (select * from read_parquet(?)),
        per_image as (
            select concept, image_id, max(activation) as peak from rows group by concept, image_id
        ),
        ranked as (
            select *, row_number() over (partition by concept order by peak desc, image_id) as rank,
                   count(*) over (partition by concept) as n
            from per_image
        ),
        chosen as (
            select concept, image_id, peak, rank,
                   case when rank <= ? then 'top' {bands} end as band
            from ranked
        )
        select c.concept::INTEGER as concept, c.image_id, any_value(c.band) as band,
               any_value(c.peak)::FLOAT as peak,
               list(r.patch order by r.patch)::INTEGER[] as patches,
               list(r.activation order by r.patch)::FLOAT[] as activations
        from chosen c join rows r using (concept, image_id)
        where c.band is not null
        group by c.concept, c.image_id
        order by c.concept, any_value(c.rank)
        """,
            params=[files, per_concept],
        )
        .to_arrow_table()
        .cast(EXAMPLE_SCHEMA)
    )


def activation_histograms(
    concept_files: Iterable[str | Path], bins: int = HISTOGRAM_BINS
) -> dict[int, tuple[float, list[int]]]:
    """Per concept: its largest activation and the counts of its activations in ``bins``
    equal bins from 0 to that value."""
    files = [str(p) for p in concept_files]
    if not files:
        return {}
    rows = (
        duckdb.connect()
        .sql(
            """
            with rows as (select concept, activation from read_parquet(?)),
            peaks as (select concept, max(activation) as peak from rows group by concept),
            binned as (
                select r.concept, least(floor(r.activation / p.peak * ?), ? - 1)::INTEGER as bin,
                       count(*) as n
                from rows r join peaks p using (concept) where p.peak > 0 group by all
            )
            select b.concept, any_value(p.peak) as peak, list(b.bin) as bins, list(b.n) as counts
            from binned b join peaks p using (concept) group by b.concept
            """,
            params=[files, bins, bins],
        )
        .fetchall()
    )
    histograms = {}
    for concept, peak, which, counts in rows:
        values = [0] * bins
        for b, n in zip(which, counts, strict=True):
            values[b] = int(n)
        histograms[int(concept)] = (float(peak), values)
    return histograms


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
