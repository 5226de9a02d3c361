"""Steering by named concepts: scale or zero concepts in patch codes (Sec. 4.3, Fig. 6).

The reconstruction is linear in the codes (``x_hat = z W_dec + b_dec``, Eq. B.4), so
scaling concept c by ``s`` moves every patch by ``(s - 1) z_c(p) W_dec[c]`` and nothing
else; zeroing it removes exactly its contribution.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

import networkx as nx
import pyarrow as pa
import torch

from insight.hierarchy import family_graph
from insight.naming import concept_names
from insight.sae import MatryoshkaBatchTopKSAE


class UnknownConceptError(KeyError):
    """A concept name that is not in the names table."""


def concepts_named(
    names: pa.Table,
    name: str,
    families: pa.Table | None = None,
    with_family: bool = False,
) -> list[int]:
    """The concepts called ``name`` (a name may be shared), and with ``with_family`` their
    descendants in the family DAG too. An unknown name raises with the closest names."""
    table = concept_names(names)
    found = sorted(c for c, n in table.items() if n == name)
    if not found:
        close = difflib.get_close_matches(name, sorted({n for n in table.values() if n}), n=5)
        raise UnknownConceptError(f"no concept is named {name!r}; closest names: {close}")
    if with_family:
        if families is None:
            raise ValueError("with_family needs the families table")
        graph = family_graph(families)
        for concept in list(found):
            if concept in graph:
                found += nx.descendants(graph, concept)
    return sorted(set(found))


def scale_concepts(codes: torch.Tensor, scales: Mapping[int, float]) -> torch.Tensor:
    """A copy of ``codes`` (..., m) with each concept's activations multiplied by its scale."""
    steered = codes.clone()
    for concept, factor in scales.items():
        steered[..., concept] *= factor
    return steered


def steered_reconstruction(
    sae: MatryoshkaBatchTopKSAE, codes: torch.Tensor, scales: Mapping[int, float]
) -> torch.Tensor:
    """The SAE reconstruction (Eq. B.4) of the steered codes."""
    return sae.decode(scale_concepts(codes, scales))


def scales_by_name(
    names: pa.Table,
    requests: Iterable[tuple[str, float]],
    families: pa.Table | None = None,
    with_family: bool = False,
) -> dict[int, float]:
    """``[(name, factor), ...]`` -> ``{concept: factor}`` (later requests win)."""
    scales: dict[int, float] = {}
    for name, factor in requests:
        for concept in concepts_named(names, name, families, with_family):
            scales[concept] = factor
    return scales
