"""The family DAG over concepts from the co-occurrence matrix D (Sec. 3.3, App. B.3).

Two criteria, one key apart (``hierarchy.criterion``):

- ``confidence`` (the paper): ``D[j, j'] >= threshold`` (0.75) makes j' a parent of j.
  D is a conditional probability with no base rate: a concept covering most patches of
  the images it appears in passes against anything local in them.
- ``baseline``: besides ``D >= threshold``, the lift ``H = (LB - D0) / (1 - D0) >= lift``,
  where D0 is what D would be if j's activation mass sat at random among the patches of
  its own images (:mod:`insight.hierarchy.cooccurrence`) and LB the Wilson lower bound
  of D at confidence ``z`` with n = the images where j fires (patches of one image are
  not independent draws). H is 0 where D0 = 1.

Clean-up, reported rather than hidden (tested in tests/hierarchy/test_hierarchy.py):
- A pair that passes both ways is ``equivalent``: listed, not an edge, not oriented.
- Longer cycles are broken greedily: edges are added in descending D and one that would
  close a cycle is dropped (``dropped_edges``; near-linear, :mod:`insight.hierarchy.dag`).
  The result is a DAG by construction.
- Every edge carries ``direct``: false where a longer path implies it (the transitive
  reduction, :func:`insight.hierarchy.dag.direct_flags`), and ``replicates``: the criterion also holds on each half of the images
  (even and odd concept shards, reduced separately).
- A concept that never fires has a zero row of D, so no edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from insight.core.io import atomic_path, write_parquet
from insight.core.sections import HierarchySettings
from insight.hierarchy.cooccurrence import HALVES, safe_ratio
from insight.hierarchy.dag import acyclic_edges, direct_flags

CRITERIA = ("confidence", "baseline")

FAMILY_SCHEMA = pa.schema(
    [
        ("parent", pa.int32()),
        ("child", pa.int32()),
        ("confidence", pa.float32()),
        ("baseline", pa.float32()),
        ("lower_bound", pa.float32()),
        ("lift", pa.float32()),
        ("images", pa.int32()),
        ("direct", pa.bool_()),
        ("replicates", pa.bool_()),
    ]
)
EVIDENCE = [field.name for field in FAMILY_SCHEMA][2:]

EQUIVALENT_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("other", pa.int32()),
        ("confidence", pa.float32()),
        ("confidence_back", pa.float32()),
    ]
)


@dataclass(frozen=True)
class FamilyCriterion:
    """When j' is a parent of j (module docstring): ``name`` is ``confidence`` or
    ``baseline``; ``threshold`` on D, ``lift`` on H and the Wilson ``z``."""

    name: str = "confidence"
    threshold: float = 0.75
    lift: float = 0.5
    z: float = 1.96

    def __post_init__(self):
        if self.name not in CRITERIA:
            raise ValueError(f"hierarchy.criterion must be one of {CRITERIA}, got {self.name!r}")


def family_criterion(settings: HierarchySettings) -> FamilyCriterion:
    """The :class:`FamilyCriterion` of the ``hierarchy`` settings."""
    return FamilyCriterion(settings.criterion, settings.threshold, settings.lift, settings.z)


def wilson_lower_bound(share: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """The Wilson score interval's lower end for a proportion ``share`` of ``n`` trials
    (0 where n = 0)."""
    share = np.asarray(share, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    z2 = z * z
    centre = share + z2 / (2 * safe)
    spread = z * np.sqrt(np.clip(share * (1 - share), 0, None) / safe + z2 / (4 * safe * safe))
    return np.where(n > 0, (centre - spread) / (1 + z2 / safe), 0.0)


def lift(lower: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``H = (LB - D0) / (1 - D0)``, 0 where D0 = 1."""
    return safe_ratio(lower - baseline, 1.0 - np.asarray(baseline, dtype=np.float64))


def _passes(
    confidence: np.ndarray, baseline: np.ndarray, images: np.ndarray, criterion: FamilyCriterion
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lower = wilson_lower_bound(confidence, images, criterion.z)
    h = lift(lower, baseline)
    passed = confidence >= criterion.threshold
    if criterion.name == "baseline":
        passed &= h >= criterion.lift
    return passed, lower, h


def edge_evidence(cooccurrence: pa.Table, totals: pa.Table, criterion: FamilyCriterion) -> pa.Table:
    """The entries of D that pass ``criterion`` as (concept, other) = (child, parent), with
    D0, the lower bound, H, the images where both fire and ``replicates``."""
    table = cooccurrence.filter(pc.greater_equal(cooccurrence["confidence"], criterion.threshold))
    child = table["concept"].to_numpy()
    images = totals["images"].to_numpy()
    confidence = table["confidence"].to_numpy().astype(np.float64)
    baseline = table["baseline"].to_numpy().astype(np.float64)
    passed, lower, h = _passes(confidence, baseline, images[child], criterion)
    replicates = np.ones(len(child), dtype=bool)
    for half in HALVES:
        half_passed, _, _ = _passes(
            table[f"confidence_{half}"].to_numpy().astype(np.float64),
            table[f"baseline_{half}"].to_numpy().astype(np.float64),
            totals[f"images_{half}"].to_numpy()[child],
            criterion,
        )
        replicates &= half_passed
    keep = np.flatnonzero(passed)
    return pa.table(
        {
            "concept": child[keep],
            "other": table["other"].to_numpy()[keep],
            "confidence": confidence[keep],
            "baseline": baseline[keep],
            "lower_bound": lower[keep],
            "lift": h[keep],
            "images": table["images"].to_numpy()[keep],
            "replicates": replicates[keep],
        }
    )


def family_graph(families: pa.Table | None) -> nx.DiGraph:
    """The family DAG (parent -> child) from ``families.parquet``, its evidence on the edges."""
    graph = nx.DiGraph()
    if families is None:
        return graph
    evidence = [name for name in EVIDENCE if name in families.column_names]
    columns = [families[name].to_pylist() for name in ("parent", "child", *evidence)]
    for parent, child, *values in zip(*columns, strict=True):
        graph.add_edge(parent, child, **dict(zip(evidence, values, strict=True)))
    return graph


def direct_edges(graph: nx.DiGraph) -> nx.DiGraph:
    """The graph with only its ``direct`` edges (all of them when none is marked)."""
    marked = [(p, c) for p, c, d in graph.edges(data="direct") if d is not None]
    if not marked:
        return graph
    direct = nx.DiGraph()
    direct.add_nodes_from(graph.nodes(data=True))
    direct.add_edges_from((p, c, data) for p, c, data in graph.edges(data=True) if data["direct"])
    return direct


def evidence_text(edge: dict) -> str:
    """One line of an edge's evidence: D, D0, H, the bound, images, replication."""
    parts = [f"D {edge['confidence']:.2f}"] if edge.get("confidence") is not None else []
    for key, label in (("baseline", "D0"), ("lift", "H"), ("lower_bound", "bound")):
        if edge.get(key) is not None:
            parts.append(f"{label} {edge[key]:.2f}")
    if edge.get("images") is not None:
        parts.append(f"{edge['images']} images")
    if edge.get("replicates") is not None:
        parts.append("replicates on both halves" if edge["replicates"] else "does not replicate")
    if edge.get("direct") is False:
        parts.append("implied by a longer path")
    return " · ".join(parts)


def family_dag(
    cooccurrence: pa.Table, totals: pa.Table, criterion: FamilyCriterion | None = None
) -> tuple[nx.DiGraph, dict]:
    """The family DAG: parent -> child edges where ``(child, parent)`` passes ``criterion``,
    equivalent pairs listed apart, cycles broken, ``direct`` marked (module docstring).
    Returns the graph and a report: ``equivalents`` (a table) and ``dropped_edges``."""
    criterion = criterion or FamilyCriterion()
    passing = edge_evidence(cooccurrence, totals, criterion).to_pylist()
    edges = {
        (row["other"], row["concept"]): row for row in passing if row["other"] != row["concept"]
    }
    equivalent = sorted((c, p) for p, c in edges if c < p and (c, p) in edges)
    for a, b in equivalent:
        del edges[(a, b)], edges[(b, a)]
    order = sorted(edges, key=lambda e: (-edges[e]["confidence"], e))
    by_frequency = totals.sort_by([("frequency", "descending"), ("concept", "ascending")])
    kept, dropped_cycle = acyclic_edges(order, by_frequency["concept"].to_pylist())
    graph = nx.DiGraph()
    graph.add_edges_from(
        (p, c, {name: edges[(p, c)][name] for name in EVIDENCE if name in edges[(p, c)]})
        for p, c in kept
    )
    nx.set_edge_attributes(graph, direct_flags(graph), "direct")
    _annotate_nodes(graph, totals)
    if not nx.is_directed_acyclic_graph(graph):  # impossible by construction; never ship a cycle
        raise RuntimeError("family graph has a cycle")
    d_pairs = {(r["concept"], r["other"]): r["confidence"] for r in passing}
    equivalents = pa.table(
        {
            "concept": [a for a, _ in equivalent],
            "other": [b for _, b in equivalent],
            "confidence": [d_pairs[(a, b)] for a, b in equivalent],
            "confidence_back": [d_pairs[(b, a)] for a, b in equivalent],
        },
        schema=EQUIVALENT_SCHEMA,
    )
    return graph, {
        "criterion": criterion,
        "equivalents": equivalents,
        "dropped_edges": {"equivalent_pairs": len(equivalent), "cycles": dropped_cycle},
    }


def _annotate_nodes(graph: nx.DiGraph, totals: pa.Table) -> None:
    names = ("frequency", "total_activation", "images", "coverage")
    columns = {name: totals[name].to_numpy() for name in names}
    for node in graph.nodes:
        graph.nodes[node].update({name: values[node].item() for name, values in columns.items()})


def families_table(graph: nx.DiGraph) -> pa.Table:
    edges = sorted(graph.edges(data=True), key=lambda e: (e[0], e[1]))
    data = {
        "parent": [e[0] for e in edges],
        "child": [e[1] for e in edges],
        **{name: [e[2].get(name) for e in edges] for name in EVIDENCE},
    }
    return pa.table(data, schema=FAMILY_SCHEMA)


def dag_summary(graph: nx.DiGraph, dropped: dict) -> dict:
    """Families (weakly connected components with an edge), the depth histogram
    (``depth_histogram[d]`` concepts whose longest path from a root has d edges),
    multi-parent concepts, roots and what the clean-up dropped."""
    depth: dict[int, int] = {}
    for node in nx.topological_sort(graph):
        parents = list(graph.predecessors(node))
        depth[node] = 1 + max(depth[p] for p in parents) if parents else 0
    histogram = (
        np.bincount(np.fromiter(depth.values(), dtype=np.int64), minlength=1)
        if depth
        else np.zeros(0)
    )
    return {
        "families": nx.number_weakly_connected_components(graph),
        "concepts_in_families": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "roots": sum(1 for n in graph if graph.in_degree(n) == 0),
        "multi_parent_concepts": sum(1 for n in graph if graph.in_degree(n) > 1),
        "depth_histogram": histogram.tolist(),
        "max_depth": max(depth.values(), default=0),
        "dropped_edges": dropped,
    }


def write_families(graph: nx.DiGraph, parquet_path: str | Path, graphml_path: str | Path) -> None:
    write_parquet(families_table(graph), parquet_path)
    with atomic_path(graphml_path) as tmp:
        nx.write_graphml(graph, tmp)


def load_families(path: str | Path) -> nx.DiGraph:
    """The family DAG from ``families.parquet`` (or ``.graphml``)."""
    path = Path(path)
    if path.suffix == ".graphml":
        return nx.read_graphml(path, node_type=int)
    import pyarrow.parquet as pq

    return family_graph(pq.read_table(path))


def _spread(values: list[int]) -> dict:
    return {"median": float(np.median(values)) if values else 0.0, "max": max(values, default=0)}


def family_quality(
    graph: nx.DiGraph, equivalents: pa.Table, totals: pa.Table, dense_coverage: float
) -> dict:
    """``family_quality.json``: edges, direct edges, equivalent pairs, dense concepts (mean
    share of their images' patches >= ``dense_coverage``), parents and children per concept
    in a family (all and direct; median, max) and the share of edges that replicate."""
    direct_graph = direct_edges(graph)
    nodes = list(graph.nodes)
    coverage = totals["coverage"].to_numpy()
    replicating = sum(1 for *_, r in graph.edges(data="replicates") if r)
    return {
        "edges": graph.number_of_edges(),
        "direct_edges": direct_graph.number_of_edges(),
        "equivalent_pairs": equivalents.num_rows,
        "dense_concepts": int((coverage >= dense_coverage).sum()),
        "dense_coverage": dense_coverage,
        "parents_per_concept": _spread([graph.in_degree(n) for n in nodes]),
        "children_per_concept": _spread([graph.out_degree(n) for n in nodes]),
        "direct_parents_per_concept": _spread([direct_graph.in_degree(n) for n in nodes]),
        "direct_children_per_concept": _spread([direct_graph.out_degree(n) for n in nodes]),
        "replicating_share": replicating / graph.number_of_edges()
        if graph.number_of_edges()
        else 0.0,
    }


def ancestors(graph: nx.DiGraph, concept: int) -> set[int]:
    """Every concept above ``concept`` (parents, their parents, ...)."""
    return nx.ancestors(graph, concept) if concept in graph else set()


def descendants(graph: nx.DiGraph, concept: int) -> set[int]:
    """Every concept below ``concept``."""
    return nx.descendants(graph, concept) if concept in graph else set()


def family_subgraph(graph: nx.DiGraph, concept: int) -> nx.DiGraph:
    """The family around ``concept``: it, its ancestors and its descendants, with edges."""
    if concept not in graph:
        sub = nx.DiGraph()
        sub.add_node(concept)
        return sub
    return graph.subgraph(
        {concept} | ancestors(graph, concept) | descendants(graph, concept)
    ).copy()
