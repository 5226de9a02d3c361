"""Graph steps of the family DAG that must stay near-linear in the edges at m = 24,576:
breaking cycles greedily and marking the edges no longer path implies.

- :func:`acyclic_edges` keeps the edges in the given order, dropping one that would close
  a cycle: the same edges as adding them one by one and searching for a path each time,
  but a cycle can only lie inside one strongly connected component of all the candidate
  edges, so edges between components are kept without a search, and inside a component
  an incremental topological order (Pearce and Kelly, 2006) bounds each search to the
  part of the order the new edge disturbs. The order starts from a hint (the family DAG
  passes the concepts by descending frequency, as a parent fires wherever its child
  does), so most edges agree with it and cost no search at all.
- :func:`direct_flags` marks an edge p -> c direct when no other child of p reaches c:
  the transitive reduction, from descendant sets held as bitsets and built once in
  reverse topological order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import networkx as nx

Edge = tuple[Hashable, Hashable]


def acyclic_edges(order: Sequence[Edge], hint: Sequence[Hashable] = ()) -> tuple[list[Edge], int]:
    """The edges of ``order`` kept by the greedy rule (in order; one closing a cycle with
    those kept before it is dropped) and the number dropped. ``hint`` lists nodes in the
    order edges most likely run (parents first): it changes the time, never the result."""
    graph = nx.DiGraph(order)
    rank = {node: i for i, node in enumerate(dict.fromkeys(hint)) if node in graph}
    component = {}
    for index, members in enumerate(nx.strongly_connected_components(graph)):
        for node in members:
            component[node] = index
    inside: dict[int, _IncrementalOrder] = {}
    kept, dropped = [], 0
    for parent, child in order:
        which = component[parent]
        if which != component[child]:
            kept.append((parent, child))
            continue
        state = inside.setdefault(which, _IncrementalOrder(rank))
        if state.add(parent, child):
            kept.append((parent, child))
        else:
            dropped += 1
    return kept, dropped


class _IncrementalOrder:
    """A DAG with a topological order kept up to date as edges arrive (Pearce-Kelly):
    an edge that agrees with the order costs nothing; otherwise only the nodes between
    its ends in the order are searched and reordered."""

    def __init__(self, rank: dict[Hashable, int]) -> None:
        self.rank = rank  # shared by the components: their nodes are disjoint
        self.out: dict[Hashable, list] = {}
        self.into: dict[Hashable, list] = {}

    def _node(self, node: Hashable) -> None:
        if node not in self.out:
            self.out[node], self.into[node] = [], []
        if node not in self.rank:  # after every hinted node
            self.rank[node] = len(self.rank) + 2**62

    def add(self, parent: Hashable, child: Hashable) -> bool:
        """Add parent -> child unless it closes a cycle; True when added."""
        self._node(parent)
        self._node(child)
        low, high = self.rank[child], self.rank[parent]
        if low < high:
            forward = self._search(child, self.out, lambda r: r <= high, parent)
            if forward is None:
                return False
            backward = self._search(parent, self.into, lambda r: r >= low, None)
            self._reorder(backward, forward)
        self.out[parent].append(child)
        self.into[child].append(parent)
        return True

    def _search(self, start, edges, inside, stop) -> list | None:
        seen, stack = {start}, [start]
        while stack:
            node = stack.pop()
            for nxt in edges[node]:
                if nxt == stop:
                    return None
                if nxt not in seen and inside(self.rank[nxt]):
                    seen.add(nxt)
                    stack.append(nxt)
        return list(seen)

    def _reorder(self, backward: list, forward: list) -> None:
        """Give the nodes that reach the parent the lowest of the affected ranks, in their
        old order, then those the child reaches."""
        nodes = sorted(backward, key=self.rank.__getitem__) + sorted(
            forward, key=self.rank.__getitem__
        )
        for node, rank in zip(nodes, sorted(self.rank[n] for n in nodes), strict=True):
            self.rank[node] = rank


def direct_flags(graph: nx.DiGraph) -> dict[Edge, bool]:
    """For each edge of the DAG ``graph``: True when no longer path links its ends."""
    position = {node: i for i, node in enumerate(graph.nodes)}
    below: dict[Hashable, int] = {}
    flags: dict[Edge, bool] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        reach = 0
        children = list(graph.successors(node))
        for child in children:
            reach |= below[child]
        for child in children:
            flags[(node, child)] = not (reach >> position[child]) & 1
        for child in children:
            reach |= 1 << position[child]
        below[node] = reach
    return flags
