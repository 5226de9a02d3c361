"""Steering by named concepts: scale or zero concepts in patch codes (Sec. 4.3, Fig. 6).

The reconstruction is linear in the codes (``x_hat = z W_dec + b_dec``, Eq. B.4), so
scaling concept c by ``s`` moves every patch by ``(s - 1) z_c(p) W_dec[c]`` and nothing
else; zeroing it removes exactly its contribution.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import networkx as nx
import pyarrow as pa
import torch

from insight.data.images import read_rgb_image
from insight.hierarchy.families import family_graph
from insight.naming.names import concept_names
from insight.sae.model import MatryoshkaBatchTopKSAE
from insight.tasks.captioning import build_captioner
from insight.views.run import load_trained_run


def caption_image_file(
    image_path: str | Path,
    cfg: dict,
    results: str | Path = "results",
    requests: Sequence[tuple[str, float]] = (),
    with_family: bool = False,
) -> dict:
    """``insight caption``: the INSIGHT captioner's caption of one image, and with
    ``requests`` ((name, factor) pairs) the caption after scaling those concepts."""
    from insight.core.io import load_safetensors, read_json
    from insight.tasks.captioner import pool_tokens
    from insight.views.heatmaps import image_codes

    run = load_trained_run(cfg, results, "caption", ["models/captioner/insight"])
    models, sae, device = run.models, run.sae, run.device
    scales = scales_by_name(run.names, requests, run.families, with_family)
    folder = run.results / "models/captioner/insight"
    settings = read_json(folder / "adapter.json")
    captioner, tokenizer = build_captioner(
        str(folder / "language_model"), settings["d_in"], settings
    )
    captioner.adapter.load_state_dict(load_safetensors(folder / "adapter.safetensors")[0])
    captioner.to(device).eval()
    image = read_rgb_image(image_path)
    _, _, codes, grid = image_codes(image, models.encoder, models.transform, sae, device)

    def caption(concept_codes: torch.Tensor) -> str:
        tokens = pool_tokens(sae.decode(concept_codes)[None], grid)
        return captioner.generate(tokens, tokenizer, settings["max_new_tokens"])[0]

    steered = scale_concepts(codes, scales)
    return {
        "image": str(image_path),
        "caption": caption(codes),
        "steered_caption": caption(steered) if scales else None,
        "scaled_concepts": {str(c): f for c, f in sorted(scales.items())},
        "scaled_activation": float(codes[:, list(scales)].sum()) if scales else 0.0,
    }


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
