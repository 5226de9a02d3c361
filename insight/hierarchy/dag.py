"""Graph steps of the family DAG that must stay near-linear in the edges at m = 24,576:
breaking cycles greedily and marking the edges no longer path implies.

- :func:`acyclic_edges` keeps the edges in the given order, dropping one that would close
  a cycle: the same edges as adding them one by one and searching for a path each time,
  but a cycle can only lie inside one strongly connected component of all the candidate
  edges, so edges between components are kept without a search, and inside a component
  an incremental topological order (Pearce and Kelly, 2006) bounds each search to the
  part of the order the new edge disturbs (compiled with numba over arrays of all the
  candidate edges, each switched on when kept). The order starts from a hint (the family DAG
  passes the concepts by descending frequency, as a parent fires wherever its child
  does), so most edges agree with it and cost no search at all.
- :func:`direct_flags` marks an edge p -> c direct when no other child of p reaches c:
  the transitive reduction, from descendant sets held as bitsets and built once in
  reverse topological order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import networkx as nx
import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Edge = tuple[Hashable, Hashable]


def acyclic_edges(order: Sequence[Edge], hint: Sequence[Hashable] = ()) -> tuple[list[Edge], int]:
    """The edges of ``order`` kept by the greedy rule (in order; one closing a cycle with
    those kept before it is dropped) and the number dropped. ``hint`` lists nodes in the
    order edges most likely run (parents first): it changes the time, never the result."""
    if not order:
        return [], 0
    ids: dict[Hashable, int] = {}
    for node in hint:
        ids.setdefault(node, len(ids))
    for parent, child in order:
        ids.setdefault(parent, len(ids))
        ids.setdefault(child, len(ids))
    pairs = np.array([(ids[p], ids[c]) for p, c in order], dtype=np.int64)
    candidates = coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(ids), len(ids))
    )
    _, component = connected_components(candidates, directed=True, connection="strong")
    inside = component[pairs[:, 0]] == component[pairs[:, 1]]
    keep = np.ones(len(pairs), bool)
    if inside.any():
        edges = pairs[inside]
        keep[np.flatnonzero(inside)] = _greedy_inside(
            edges[:, 0].copy(), edges[:, 1].copy(), len(ids)
        )
    kept = [edge for edge, flag in zip(order, keep.tolist(), strict=True) if flag]
    return kept, int(len(order) - len(kept))


def _adjacency(ends: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of edge numbers by the node at ``ends``: edges ``slots[starts[v]:starts[v + 1]]``."""
    slots = np.argsort(ends, kind="stable")
    return np.r_[0, np.cumsum(np.bincount(ends, minlength=n))], slots


def _greedy_inside(parents: np.ndarray, children: np.ndarray, n: int) -> np.ndarray:
    """The greedy rule on edges within strongly connected components (module docstring)."""
    out_starts, out_slots = _adjacency(parents, n)
    in_starts, in_slots = _adjacency(children, n)
    return _incremental_order(
        parents, children, out_starts, out_slots, in_starts, in_slots, np.arange(n, dtype=np.int64)
    )


@numba.njit(cache=True)
def _reach(  # pragma: no cover
    start, stop, bound, forward, ends, starts, slots, active, rank, seen, stamp, stack, found
):
    """Depth-first from ``start`` over active edges (``ends[edge]`` the far end) to nodes
    whose rank is at most (``forward``) or at least ``bound``: their number, the nodes in
    ``found``; -1 as soon as ``stop`` is reached."""
    seen[start] = stamp
    stack[0] = found[0] = start
    top = count = 1
    while top > 0:
        top -= 1
        node = stack[top]
        for slot in range(starts[node], starts[node + 1]):
            edge = slots[slot]
            if not active[edge]:
                continue
            reached = ends[edge]
            if reached == stop:
                return -1
            inside = rank[reached] <= bound if forward else rank[reached] >= bound
            if seen[reached] != stamp and inside:
                seen[reached] = stamp
                stack[top] = found[count] = reached
                top += 1
                count += 1
    return count


@numba.njit(cache=True)
def _incremental_order(
    parents, children, out_starts, out_slots, in_starts, in_slots, rank
):  # pragma: no cover
    """Pearce and Kelly's incremental topological order over the edges in turn: an edge
    that agrees with the order is kept at no cost; otherwise the nodes its child reaches
    below its parent's rank are searched (the parent among them: a cycle, dropped), then
    those reaching the parent above the child's rank, and the two sets take their ranks
    anew, the parent's side first."""
    n, edges = rank.size, parents.size
    active = np.zeros(edges, np.bool_)
    seen = np.zeros(n, np.int64)
    stack = np.empty(n, np.int64)
    ahead = np.empty(n, np.int64)
    behind = np.empty(n, np.int64)
    stamp = 0
    for edge in range(edges):
        parent, child = parents[edge], children[edge]
        low, high = rank[child], rank[parent]
        if low < high:
            stamp += 1
            forward = _reach(
                child,
                parent,
                high,
                True,
                children,
                out_starts,
                out_slots,
                active,
                rank,
                seen,
                stamp,
                stack,
                ahead,
            )
            if forward < 0:
                continue
            stamp += 1
            backward = _reach(
                parent,
                -1,
                low,
                False,
                parents,
                in_starts,
                in_slots,
                active,
                rank,
                seen,
                stamp,
                stack,
                behind,
            )
            first = behind[:backward][np.argsort(rank[behind[:backward]])]
            then = ahead[:forward][np.argsort(rank[ahead[:forward]])]
            pool = np.sort(np.concatenate((rank[first], rank[then])))
            rank[first] = pool[:backward]
            rank[then] = pool[backward:]
        active[edge] = True
    return active


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
