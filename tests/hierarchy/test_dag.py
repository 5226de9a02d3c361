"""The family DAG's graph steps against the plain algorithms they replace."""

import networkx as nx
import numpy as np
import pytest

from insight.hierarchy.dag import acyclic_edges, direct_flags


def greedy_by_path_search(order):
    """The rule as first written: add edges in order, drop one whose child already reaches
    its parent (a search per edge)."""
    graph, dropped = nx.DiGraph(), 0
    for parent, child in order:
        if graph.has_node(child) and graph.has_node(parent) and nx.has_path(graph, child, parent):
            dropped += 1
            continue
        graph.add_edge(parent, child)
    return list(graph.edges), dropped


@pytest.mark.parametrize("seed", range(6))
def test_acyclic_edges_keep_what_a_path_search_per_edge_keeps(seed):
    """Random candidate graphs full of cycles (a few dense clusters and sparse links
    between them), edges in a random order: the same kept edges and the same count."""
    rng = np.random.default_rng(seed)
    n = 120
    cluster = rng.integers(0, 6, size=n)
    order = []
    for _ in range(1500):
        a, b = (int(x) for x in rng.integers(0, n, size=2))
        if a != b and (cluster[a] == cluster[b] or rng.random() < 0.1):
            order.append((a, b))
    order = list(dict.fromkeys(order))
    expected, expected_dropped = greedy_by_path_search(order)
    # a hint of the likely order changes the time only: none, all nodes shuffled, a few
    for hint in (
        (),
        [int(x) for x in rng.permutation(n)],
        [int(x) for x in rng.permutation(n)[:9]],
    ):
        kept, dropped = acyclic_edges(order, hint)
        assert set(kept) == set(expected) and dropped == expected_dropped > 0
        assert nx.is_directed_acyclic_graph(nx.DiGraph(kept))
        assert kept == [e for e in order if e in set(kept)]  # in the given order


@pytest.mark.parametrize("seed", range(4))
def test_direct_flags_are_the_transitive_reduction(seed):
    rng = np.random.default_rng(seed)
    rank = rng.permutation(200)
    edges = {(int(a), int(b)) for a, b in rng.integers(0, 200, size=(1200, 2)) if rank[a] < rank[b]}
    graph = nx.DiGraph(sorted(edges))
    reduced = nx.transitive_reduction(graph)
    flags = direct_flags(graph)
    assert set(flags) == set(graph.edges)
    assert {e for e, direct in flags.items() if direct} == set(reduced.edges)
    assert sum(not d for d in flags.values()) > 0
