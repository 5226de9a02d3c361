"""How much of the demo world the concepts recover: world-word names and part-of family edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import read_label_map
from insight.core.logs import progress
from insight.models.frozen import FrozenSpec, load_frozen, squashed_input
from insight.naming.names import concept_names
from insight.sae.model import load_sae


def world_recovery(
    parts_root: str | Path,
    frozen: FrozenSpec,
    sae_path: str | Path,
    families_path: str | Path,
    names_path: str | Path,
    device: torch.device,
    top_concepts: int = 20,
) -> dict:
    """How much of the demo world the concepts recovered: the share of the most
    frequent concepts named with the world's words, the part and object concepts named
    with their own words (against shuffled names), and the family edges that mirror the
    world's part-of structure, against the count expected with shuffled parents. Concept
    labels come from the thresholded codes on the world's part-annotated scenes."""
    from insight.demo import world
    from insight.hierarchy.families import load_families
    from insight.tasks.interpretability import part_pairs

    models = load_frozen(frozen, device)
    sae = load_sae(sae_path).to(device)
    size = tuple(models.model.visual.image_size)
    grid = tuple(models.model.visual.grid_size)
    stats = world.LabelStats.zeros(sae.config.d_sae)
    pairs = part_pairs("partimagenet", parts_root)
    bar = progress(len(pairs), "world recovery", "img")
    for _, image_path, label_path in pairs:
        part_map = read_label_map(label_path, size)
        with torch.no_grad():
            codes = sae.encode(models.encoder(squashed_input(image_path, models, device))[0])
        stats.add(codes.cpu().numpy(), world.patch_labels(part_map, grid))
        bar.update(1)
    bar.close()
    part, obj = world.concept_labels(stats)
    names = pq.read_table(names_path, columns=["concept", "name", "frequency"])
    naming = world_named_share(names, top_concepts)
    naming["concepts"] = [
        {**r, "part": part[r["concept"]], "object": obj[r["concept"]]} for r in naming["concepts"]
    ]
    name_of = concept_names(names)
    for kind, labels in (("part", part), ("object", obj)):
        labelled = [c for c, label in enumerate(labels) if label is not None]
        named = sum(world.is_world_name(name_of.get(c)) for c in labelled)
        naming[f"{kind}_concepts"] = len(labelled)
        naming[f"{kind}_concepts_world_named"] = named
        naming[f"{kind}_concepts_world_named_fraction"] = named / len(labelled) if labelled else 0.0
        naming[f"{kind}_concepts_own_word"] = world.own_word_naming(labels, name_of)
    edges = sorted(load_families(families_path).edges)
    return {
        "images": len(pairs),
        "naming": naming,
        "families": world.family_recovery(edges, part, obj, name_of),
    }


def world_named_share(names: pa.Table, top_concepts: int = 20) -> dict:
    """The ``top_concepts`` most frequent concepts of a ``names.parquet`` table and how many
    carry a world word (an object, part, ground or colour of the demo world)."""
    from insight.demo import world

    frequent = sorted(
        (
            r
            for r in names.select(["concept", "name", "frequency"]).to_pylist()
            if r["frequency"] > 0
        ),
        key=lambda r: (-r["frequency"], r["concept"]),
    )[:top_concepts]
    world_named = [world.is_world_name(r["name"]) for r in frequent]
    return {
        "top_concepts": len(frequent),
        "world_named": sum(world_named),
        "world_named_fraction": float(np.mean(world_named)) if world_named else 0.0,
        "concepts": frequent,
    }


def compare_naming_methods(
    name_inputs: dict, cfg: dict, threshold: float, top_concepts: int = 20
) -> dict:
    """The world-named share of the most frequent concepts under each naming method
    (Eq. 6 ``decoder``, B.9 ``hierarchy``, the release's vector), on the same run. The
    configured method's names are read from the run's ``names.parquet``, not recomputed."""
    from insight.naming.names import name_concepts

    result = {}
    for method in ("decoder", "hierarchy", "release"):
        if method == cfg["method"]:
            table = pq.read_table(name_inputs["names"])
        else:
            table = name_concepts(
                name_inputs["sae"],
                name_inputs["families"],
                name_inputs["totals"],
                name_inputs["concepts"],
                name_inputs["embeddings"],
                name_inputs["index"],
                {**cfg, "method": method},
                name_inputs["cooccurrence"],
                threshold,
            )
        share = world_named_share(table, top_concepts)
        share["names"] = [r["name"] for r in share.pop("concepts")]
        result[method] = share
    return result
