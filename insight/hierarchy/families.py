"""The family DAG over concepts from the co-occurrence matrix D (Sec. 3.3, App. B.3).

Choices where the paper leaves room (tested in tests/hierarchy/test_hierarchy.py):
- A concept that never fires has a zero row of D, so no edges.
- Family edges: ``D[j, j'] >= threshold`` (0.75) makes j' a parent of j. A mutual pair
  (both directions above the threshold) keeps one edge, from the concept active on more
  patches (ties: larger total activation, then lower index, i.e. the coarser
  Matryoshka group). Longer cycles are then broken greedily: edges are added in
  descending confidence and an edge that would close a cycle is dropped. The result
  is a DAG by construction; ``summary['dropped_edges']`` counts what each rule removed.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from insight.core.io import atomic_path, write_parquet

FAMILY_SCHEMA = pa.schema(
    [("parent", pa.int32()), ("child", pa.int32()), ("confidence", pa.float32())]
)


def family_graph(families: pa.Table | None) -> nx.DiGraph:
    """The family DAG (parent -> child) from ``families.parquet``."""
    graph = nx.DiGraph()
    if families is not None:
        confidences = (
            families["confidence"].to_pylist()
            if "confidence" in families.column_names
            else [None] * families.num_rows
        )
        for parent, child, confidence in zip(
            families["parent"].to_pylist(), families["child"].to_pylist(), confidences, strict=True
        ):
            graph.add_edge(parent, child, confidence=confidence)
    return graph


def family_dag(
    cooccurrence: pa.Table, totals: pa.Table, threshold: float = 0.75
) -> tuple[nx.DiGraph, dict]:
    """The family DAG: parent -> child edges from ``D[child, parent] >= threshold``
    (Sec. 3.3, inverted), mutual pairs and cycles resolved as the module docstring says."""
    frequency = totals["frequency"].to_numpy()
    activation = totals["total_activation"].to_numpy()
    strong = cooccurrence.filter(pc.greater_equal(cooccurrence["confidence"], threshold))
    child = strong["concept"].to_numpy()
    parent = strong["other"].to_numpy()
    confidence = strong["confidence"].to_numpy()
    edges = {
        (int(p), int(c)): float(w)
        for p, c, w in zip(parent, child, confidence, strict=True)
        if p != c
    }

    def generality(concept: int) -> tuple:
        return (frequency[concept], activation[concept], -concept)

    dropped_mutual = 0
    for p, c in list(edges):
        if (p, c) in edges and (c, p) in edges:
            loser = (p, c) if generality(p) < generality(c) else (c, p)
            del edges[loser]
            dropped_mutual += 1
    graph = nx.DiGraph()
    dropped_cycle = 0
    for (p, c), w in sorted(edges.items(), key=lambda e: (-e[1], -frequency[e[0][0]], e[0])):
        if graph.has_node(c) and graph.has_node(p) and nx.has_path(graph, c, p):
            dropped_cycle += 1
            continue
        graph.add_edge(p, c, confidence=w)
    for node in graph.nodes:
        graph.nodes[node]["frequency"] = int(frequency[node])
        graph.nodes[node]["total_activation"] = float(activation[node])
    if not nx.is_directed_acyclic_graph(graph):  # impossible by construction; never ship a cycle
        raise RuntimeError("family graph has a cycle")
    return graph, {"mutual_pairs": dropped_mutual, "cycles": dropped_cycle}


def families_table(graph: nx.DiGraph) -> pa.Table:
    edges = sorted(graph.edges(data="confidence"))
    return pa.table(
        {
            "parent": np.array([e[0] for e in edges], dtype=np.int32),
            "child": np.array([e[1] for e in edges], dtype=np.int32),
            "confidence": np.array([e[2] for e in edges], dtype=np.float32),
        },
        schema=FAMILY_SCHEMA,
    )


def dag_summary(graph: nx.DiGraph, dropped: dict) -> dict:
    """Families (weakly connected components with an edge), the depth histogram
    (``depth_histogram[d]`` concepts whose longest path from a root has d edges),
    multi-parent concepts, roots and what the cycle rules dropped."""
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

    table = pq.read_table(path)
    graph = nx.DiGraph()
    for parent, child, confidence in zip(
        *(table[c].to_pylist() for c in ("parent", "child", "confidence")), strict=True
    ):
        graph.add_edge(parent, child, confidence=confidence)
    return graph


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
