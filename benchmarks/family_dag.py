"""Family DAG stage vs the plain graph algorithms it replaces.

Generates candidate family edges shaped like D's entries above the threshold (parents
mostly more frequent than their children, a small share reversed so that cycles appear),
then times :func:`insight.hierarchy.families.family_dag` (cycles broken inside strongly
connected components with an incremental topological order, direct edges from
descendant bitsets) against the baseline: the same greedy rule with a networkx path
search per edge, then ``nx.transitive_reduction``. Both run on the small graph and must
keep the same edges and mark the same ones direct; the project alone then runs at the
paper's scale (m = 24,576 concepts, 500,000 candidate edges).

    python benchmarks/family_dag.py [--m 4096 --edges 40000 --large-m 24576 --large-edges 500000]
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import numpy as np
import pyarrow as pa
from _common import machine, report

from insight.hierarchy.families import FamilyCriterion, family_dag


def candidate_tables(
    m: int, edges: int, reversed_share: float, reversed_within: float = 0.0, seed: int = 0
):
    """D's entries above 0.75 as ``cooccurrence.parquet`` / ``totals.parquet`` tables:
    concept index = frequency rank, each edge from the more frequent end except a
    ``reversed_share`` of them. A reversed edge's parent fires at least ``reversed_within``
    times as often as its child (0: any pair). On the demo 0.35% of the candidate edges
    are reversed, each parent with at least 0.67 of its child's frequency: D >= 0.75
    puts most of the child's mass on the parent's patches, so the parent cannot be much
    rarer."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, m, size=int(edges * 1.3))
    b = rng.integers(0, m, size=a.size)
    parent, child = np.minimum(a, b), np.maximum(a, b)
    flip = rng.random(a.size) < reversed_share
    if reversed_within > 0:  # frequency (m - rank) x 10: a parent rank r_p >= r_c whose
        # frequency is at least reversed_within of the child's
        reach = np.maximum(((m - parent) * (1 - reversed_within)).astype(np.int64), 1)
        near = np.minimum(parent + 1 + rng.integers(0, reach), m - 1)
        child = np.where(flip, near, child)
    parent, child = np.where(flip, child, parent), np.where(flip, parent, child)
    pairs = np.unique(np.stack([child, parent], 1)[parent != child], axis=0)
    pairs = pairs[rng.permutation(len(pairs))[:edges]]
    d = rng.uniform(0.75, 1.0, len(pairs)).astype(np.float32)
    zero = np.zeros(len(pairs), np.float32)
    cooccurrence = pa.table(
        {
            "concept": pairs[:, 0].astype(np.int32),
            "other": pairs[:, 1].astype(np.int32),
            "confidence": d,
            "baseline": zero,
            "images": np.full(len(pairs), 50, np.int32),
            "confidence_even": d,
            "baseline_even": zero,
            "confidence_odd": d,
            "baseline_odd": zero,
        }
    )
    frequency = np.arange(m, 0, -1, dtype=np.int64) * 10
    totals = pa.table(
        {
            "concept": np.arange(m, dtype=np.int32),
            "total_activation": frequency.astype(np.float64),
            "frequency": frequency,
            "images": np.full(m, 100, np.int64),
            "coverage": np.full(m, 0.1),
            "images_even": np.full(m, 50, np.int64),
            "images_odd": np.full(m, 50, np.int64),
        }
    )
    return cooccurrence, totals


def baseline_dag(cooccurrence: pa.Table) -> tuple[set, set]:
    """The greedy rule with a path search per edge, then networkx's transitive reduction:
    the kept edges and the direct ones."""
    rows = cooccurrence.to_pylist()
    d = {(r["other"], r["concept"]): r["confidence"] for r in rows}
    mutual = {(p, c) for p, c in d if (c, p) in d}
    order = sorted((e for e in d if e not in mutual), key=lambda e: (-d[e], e))
    graph = nx.DiGraph()
    for parent, child in order:
        if graph.has_node(child) and graph.has_node(parent) and nx.has_path(graph, child, parent):
            continue
        graph.add_edge(parent, child)
    return set(graph.edges), set(nx.transitive_reduction(graph).edges)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--m", type=int, default=4096)
    parser.add_argument("--edges", type=int, default=40_000)
    parser.add_argument("--large-m", type=int, default=24_576)
    parser.add_argument("--large-edges", type=int, default=500_000)
    parser.add_argument("--reversed", type=float, default=0.0035, help="share of edges reversed")
    parser.add_argument(
        "--reversed-within",
        type=float,
        default=2 / 3,
        help="a reversed parent's least frequency over its child's (0: any pair)",
    )
    args = parser.parse_args()
    criterion = FamilyCriterion("confidence")

    cooccurrence, totals = candidate_tables(args.m, args.edges, args.reversed, args.reversed_within)
    project_s, (graph, report_) = timed(lambda: family_dag(cooccurrence, totals, criterion))
    baseline_s, (edges, direct) = timed(lambda: baseline_dag(cooccurrence))
    same = set(graph.edges) == edges and {e for e in graph.edges if graph.edges[e]["direct"]} == (
        direct
    )
    print(f"m={args.m}: project {project_s:.2f} s, baseline {baseline_s:.2f} s, same={same}")

    large, large_totals = candidate_tables(
        args.large_m, args.large_edges, args.reversed, args.reversed_within
    )
    large_s, (large_graph, large_report) = timed(lambda: family_dag(large, large_totals, criterion))
    print(f"m={args.large_m}, {large.num_rows} candidates: project {large_s:.1f} s")
    report(
        {
            "stage": "family_dag",
            "baseline": "a networkx path search per edge, then nx.transitive_reduction",
            "m": args.m,
            "candidate_edges": cooccurrence.num_rows,
            "reversed_share": args.reversed,
            "reversed_within": round(args.reversed_within, 3),
            "edges": graph.number_of_edges(),
            "cycles_dropped": report_["dropped_edges"]["cycles"],
            "project_s": round(project_s, 3),
            "baseline_s": round(baseline_s, 3),
            "ratio": round(baseline_s / project_s, 3),
            "same_edges": same,
            "large_m": args.large_m,
            "large_candidate_edges": large.num_rows,
            "large_edges": large_graph.number_of_edges(),
            "large_cycles_dropped": large_report["dropped_edges"]["cycles"],
            "large_project_s": round(large_s, 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
