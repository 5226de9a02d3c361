"""How much of the demo world the concepts recover: each concept's part and object from the
part maps, world-word names, and the part-of family edges against a shuffled-parent null."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import read_label_map
from insight.core.logs import progress
from insight.core.sections import HierarchySettings, NamingSettings
from insight.demo.world import CLASSES, COLOURS, OBJECT_PARTS, PART_BACKGROUND, PART_OF, PARTS
from insight.models.frozen import FrozenSpec, load_frozen, squashed_input
from insight.naming.names import concept_names
from insight.sae.model import load_sae

LABELS = (*PARTS, "background")  # the part map's labels as scored (PART_BACKGROUND last)


def patch_labels(part_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The part label of each patch (the label at the patch's centre) as ids into
    :data:`LABELS`, row-major ``(h * w,)``; the part map must be the model's input size."""
    height, width = part_map.shape
    rows = (np.arange(grid[0]) * height + height // 2) // grid[0]
    cols = (np.arange(grid[1]) * width + width // 2) // grid[1]
    labels = part_map[rows][:, cols].reshape(-1).astype(np.int64)
    return np.where(labels == PART_BACKGROUND, len(PARTS), labels)


@dataclass
class LabelStats:
    """What the concepts do on the part-annotated scenes, summed over patches:
    activation ``mass (m, len(LABELS))`` of each concept on each label, the ``patches``
    of each label ``(len(LABELS),)`` and the patches each concept is ``active`` on ``(m,)``."""

    mass: np.ndarray
    patches: np.ndarray
    active: np.ndarray

    @classmethod
    def zeros(cls, concepts: int) -> LabelStats:
        return cls(
            np.zeros((concepts, len(LABELS))),
            np.zeros(len(LABELS), np.int64),
            np.zeros(concepts, np.int64),
        )

    def add(self, codes: np.ndarray, labels: np.ndarray) -> None:
        """Add one image: patch codes ``(N, m)`` and the patches' label ids ``(N,)``."""
        np.add.at(self.mass.T, labels, codes)
        self.patches += np.bincount(labels, minlength=len(LABELS))
        self.active += (codes > 0).sum(0)


def concept_labels(
    stats: LabelStats,
    min_patches: int = 10,
    part_share: float = 0.6,
    object_share: float = 0.7,
    each_part: float = 0.2,
) -> tuple[list[str | None], list[str | None]]:
    """Each concept's part (or None) and object (or None) from its *rate profile*: its
    mean activation per patch of each label, normalised to sum 1, so a large part or the
    background (most patches) does not outweigh a small part by area alone.

    - part concept of ``q``: ``part_share`` (0.6) or more of the profile on ``q``;
    - object concept of ``o``: ``each_part`` (0.2) or more on each of ``o``'s two parts and
      ``object_share`` (0.7) or more on the two together (it fires on the whole object,
      little elsewhere);
    - neither (None): mixed or background concepts, dense hubs, and concepts active on
      fewer than ``min_patches`` patches of the annotated scenes (too few to tell).

    A concept is one or the other: one with ``part_share`` on a part is a part concept.
    The thresholds are ours (the paper has no such labels); the ideal-concepts test in
    ``tests/demo/test_world.py`` checks they find every planted edge."""
    rate = stats.mass / np.maximum(stats.patches, 1)[None]
    total = rate.sum(1, keepdims=True)
    profile = np.divide(rate, total, out=np.zeros_like(rate), where=total > 0)
    known = (stats.active >= min_patches) & (total[:, 0] > 0)
    part: list[str | None] = [None] * len(profile)
    obj: list[str | None] = [None] * len(profile)
    for concept in np.nonzero(known)[0]:
        row = profile[concept]
        top = int(np.argmax(row[: len(PARTS)]))
        if row[top] >= part_share:
            part[concept] = PARTS[top]
            continue
        for name, parts in OBJECT_PARTS.items():
            shares = row[[PARTS.index(p) for p in parts]]
            if shares.min() >= each_part and shares.sum() >= object_share:
                obj[concept] = name
    return part, obj


def planted_edges(
    edges: list[tuple[int, int]], part: list[str | None], obj: list[str | None]
) -> list[tuple[int, int]]:
    """Family edges (parent, child) that mirror the world's part-of structure: the parent
    is an object concept and the child a concept on one of that object's parts."""
    return [(p, c) for p, c in edges if part[c] is not None and obj[p] == PART_OF[part[c]]]


PLANTED_PAIRS = tuple(f"{obj} {part}" for obj, parts in OBJECT_PARTS.items() for part in parts)


def planted_pair_counts(
    edges: list[tuple[int, int]], part: list[str | None], obj: list[str | None]
) -> np.ndarray:
    """How many of ``edges`` plant each (object, part) pair, in :data:`PLANTED_PAIRS` order."""
    counts = np.zeros(len(PLANTED_PAIRS), np.int64)
    for p, c in planted_edges(edges, part, obj):
        counts[PLANTED_PAIRS.index(f"{obj[p]} {part[c]}")] += 1
    return counts


def shuffled_planted_edges(
    edges: list[tuple[int, int]],
    part: list[str | None],
    obj: list[str | None],
    rounds: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The planted-edge counts per pair ``(rounds, len(PLANTED_PAIRS))`` of ``rounds``
    random pairings: the same parents and children, parents shuffled among the edges
    (the counts expected by chance)."""
    rng = np.random.default_rng(seed)
    parents = np.array([p for p, _ in edges], np.int64)
    children = [c for _, c in edges]
    return np.array(
        [
            planted_pair_counts(
                list(zip(rng.permutation(parents).tolist(), children, strict=True)), part, obj
            )
            for _ in range(rounds if edges else 0)
        ],
        np.int64,
    ).reshape(-1, len(PLANTED_PAIRS))


def permutation_p_value(null: np.ndarray, observed: int) -> float:
    """The share of the chance counts ``null`` (one per shuffle) that reach ``observed``;
    1.0 without shuffles. Counts are never negative, so nothing observed gives 1.0."""
    return float((null >= observed).mean()) if len(null) else 1.0


def family_recovery(
    edges: list[tuple[int, int]],
    part: list[str | None],
    obj: list[str | None],
    name_of: dict[int, str] | None = None,
    alpha: float = 0.01,
) -> dict:
    """The recovery report's ``families`` section: the family edges (parent, child) that
    mirror the part-of structure (:func:`planted_edges`), the (object, part) pairs they
    cover (of 8), the mean count with shuffled parents and the permutation p-value (the
    share of shuffles that plant as many edges or more), the same per pair (``pairs``),
    the pairs and objects significant at ``alpha`` on their own, and each planted edge
    with its concepts' names (``name_of``) and labels."""
    name_of = name_of or {}
    planted = planted_edges(edges, part, obj)
    by_pair = planted_pair_counts(edges, part, obj)
    shuffled = shuffled_planted_edges(edges, part, obj)
    totals = shuffled.sum(1)

    pairs = {
        pair: {
            "planted_edges": int(by_pair[i]),
            "shuffled_parents": float(shuffled[:, i].mean()) if len(shuffled) else 0.0,
            "p_value": permutation_p_value(shuffled[:, i], int(by_pair[i])),
        }
        for i, pair in enumerate(PLANTED_PAIRS)
    }
    significant = sorted(pair for pair, row in pairs.items() if row["p_value"] < alpha)
    return {
        "edges": len(edges),
        "object_concepts": sum(o is not None for o in obj),
        "part_concepts": sum(p is not None for p in part),
        "object_to_part_edges": sum(1 for p, c in edges if obj[p] and part[c]),
        "planted_edges": len(planted),
        "planted_edges_shuffled_parents": float(totals.mean()) if len(totals) else 0.0,
        "p_value": permutation_p_value(totals, len(planted)),
        "planted_pairs": sorted({f"{obj[p]} {part[c]}" for p, c in planted}),
        "pairs": pairs,
        "significant_pairs": significant,
        "significant_objects": sorted({pair.split()[0] for pair in significant}),
        "examples": [
            {
                "parent": p,
                "parent_name": name_of.get(p),
                "parent_object": obj[p],
                "child": c,
                "child_name": name_of.get(c),
                "child_part": part[c],
            }
            for p, c in planted
        ],
    }


OWN_WORDS = {
    **{part: {part, obj} for part, obj in PART_OF.items()},
    **{obj: {obj, *parts} for obj, parts in OBJECT_PARTS.items()},
}  # the words that name a part concept (its part, its object) or an object concept


def own_word_naming(
    labels: list[str | None], name_of: dict[int, str], rounds: int = 1000, seed: int = 0
) -> dict:
    """How many labelled concepts (a part or object label per concept, None elsewhere) are
    named with one of their own label's :data:`OWN_WORDS`: a part concept with its part's
    or its object's word, an object concept with its object's or a part's. Against chance:
    the mean count with the names shuffled among the same concepts, and the share of
    ``rounds`` shuffles that match as many or more (the permutation p-value)."""
    concepts = [c for c, label in enumerate(labels) if label is not None]
    names = [name_of.get(c) for c in concepts]

    def own(assigned: list[str | None]) -> int:
        return sum(
            bool(set((name or "").split()) & OWN_WORDS[labels[c]])
            for c, name in zip(concepts, assigned, strict=True)
        )

    named = own(names)
    rng = np.random.default_rng(seed)
    name_array = np.array(names, object)
    shuffled = np.array([own(list(rng.permutation(name_array))) for _ in range(rounds)])
    return {
        "concepts": len(concepts),
        "named": named,
        "fraction": named / len(concepts) if concepts else 0.0,
        "shuffled_names": float(shuffled.mean()) if len(shuffled) else 0.0,
        "p_value": permutation_p_value(shuffled, named),
    }


def is_world_name(name: str | None) -> bool:
    """A concept name made of the world's words (an object, part, ground or colour)."""
    words = set(CLASSES) | set(PARTS) | set(COLOURS)
    return name is not None and any(token in words for token in name.split())


def world_labels(
    parts_root: str | Path, frozen: FrozenSpec, sae_path: str | Path, device: torch.device
) -> tuple[list[str | None], list[str | None], int]:
    """Each concept's part and object (:func:`concept_labels`) from its codes on the
    world's part-annotated scenes, and the number of scenes read."""
    from insight.tasks.interpretability import part_pairs

    models = load_frozen(frozen, device)
    sae = load_sae(sae_path).to(device)
    size = tuple(models.model.visual.image_size)
    grid = tuple(models.model.visual.grid_size)
    stats = LabelStats.zeros(sae.config.d_sae)
    pairs = part_pairs("partimagenet", parts_root)
    bar = progress(len(pairs), "world recovery", "img")
    for _, image_path, label_path in pairs:
        part_map = read_label_map(label_path, size)
        with torch.no_grad():
            codes = sae.encode(models.encoder(squashed_input(image_path, models, device))[0])
        stats.add(codes.cpu().numpy(), patch_labels(part_map, grid))
        bar.update(1)
    bar.close()
    return (*concept_labels(stats), len(pairs))


def world_recovery(
    parts_root: str | Path,
    frozen: FrozenSpec,
    sae_path: str | Path,
    families_path: str | Path,
    names_path: str | Path,
    device: torch.device,
    top_concepts: int = 20,
    criteria: tuple[str | Path, str | Path, HierarchySettings] | None = None,
) -> dict:
    """How much of the demo world the concepts recovered: the share of the most
    frequent concepts named with the world's words, the part and object concepts named
    with their own words (against shuffled names), and the family edges that mirror the
    world's part-of structure, against the count expected with shuffled parents; with
    ``criteria`` (co-occurrence, totals, hierarchy settings) the same for each family
    criterion (:func:`families_by_criterion`). Concept labels come from the thresholded
    codes on the world's part-annotated scenes."""
    from insight.hierarchy.families import load_families

    part, obj, images = world_labels(parts_root, frozen, sae_path, device)
    names = pq.read_table(names_path, columns=["concept", "name", "frequency"])
    naming = world_named_share(names, top_concepts)
    naming["concepts"] = [
        {**r, "part": part[r["concept"]], "object": obj[r["concept"]]} for r in naming["concepts"]
    ]
    name_of = concept_names(names)
    for kind, labels in (("part", part), ("object", obj)):
        labelled = [c for c, label in enumerate(labels) if label is not None]
        named = sum(is_world_name(name_of.get(c)) for c in labelled)
        naming[f"{kind}_concepts"] = len(labelled)
        naming[f"{kind}_concepts_world_named"] = named
        naming[f"{kind}_concepts_world_named_fraction"] = named / len(labelled) if labelled else 0.0
        naming[f"{kind}_concepts_own_word"] = own_word_naming(labels, name_of)
    edges = sorted(load_families(families_path).edges)
    result = {
        "images": images,
        "naming": naming,
        "families": family_recovery(edges, part, obj, name_of),
    }
    if criteria is not None:
        result["families_by_criterion"] = families_by_criterion(*criteria, part, obj)
    return result


def families_by_criterion(
    cooccurrence_path: str | Path,
    totals_path: str | Path,
    settings: HierarchySettings,
    part: list[str | None],
    obj: list[str | None],
) -> dict:
    """Both family criteria on the same D: edges, direct edges, equivalent pairs, the
    children of the most frequent concept, the most direct children of any concept, and
    the planted edges against shuffled parents (:func:`family_recovery`)."""
    from insight.hierarchy.families import CRITERIA, family_criterion, family_dag, family_quality

    cooccurrence, totals = pq.read_table(cooccurrence_path), pq.read_table(totals_path)
    top = int(np.argmax(totals["frequency"].to_numpy()))
    out = {}
    for name in CRITERIA:
        criterion = dataclasses.replace(family_criterion(settings), name=name)
        graph, report = family_dag(cooccurrence, totals, criterion)
        quality = family_quality(graph, report["equivalents"], totals, settings.dense_coverage)
        recovered = family_recovery(sorted(graph.edges), part, obj)
        out[name] = {
            "edges": quality["edges"],
            "direct_edges": quality["direct_edges"],
            "equivalent_pairs": quality["equivalent_pairs"],
            "most_frequent_concept": top,
            "most_frequent_concept_children": graph.out_degree(top) if top in graph else 0,
            "max_direct_children": quality["direct_children_per_concept"]["max"],
            **{
                key: recovered[key]
                for key in ("planted_edges", "planted_edges_shuffled_parents", "p_value")
            },
        }
    return out


def world_named_share(names: pa.Table, top_concepts: int = 20) -> dict:
    """The ``top_concepts`` most frequent concepts of a ``names.parquet`` table and how many
    carry a world word (an object, part, ground or colour of the demo world)."""
    frequent = sorted(
        (
            r
            for r in names.select(["concept", "name", "frequency"]).to_pylist()
            if r["frequency"] > 0
        ),
        key=lambda r: (-r["frequency"], r["concept"]),
    )[:top_concepts]
    world_named = [is_world_name(r["name"]) for r in frequent]
    return {
        "top_concepts": len(frequent),
        "world_named": sum(world_named),
        "world_named_fraction": float(np.mean(world_named)) if world_named else 0.0,
        "concepts": frequent,
    }


def compare_naming_methods(
    name_inputs: dict, settings: NamingSettings, threshold: float, top_concepts: int = 20
) -> dict:
    """The world-named share of the most frequent concepts under each naming method
    (Eq. 6 ``decoder``, B.9 ``hierarchy``, the release's vector), on the same run. The
    configured method's names are read from the run's ``names.parquet``, not recomputed."""
    from insight.naming.names import name_concepts

    result = {}
    for method in ("decoder", "hierarchy", "release"):
        if method == settings.method:
            table = pq.read_table(name_inputs["names"])
        else:
            table = name_concepts(
                name_inputs["sae"],
                name_inputs["families"],
                name_inputs["totals"],
                name_inputs["concepts"],
                name_inputs["embeddings"],
                name_inputs["index"],
                dataclasses.replace(settings, method=method),
                name_inputs["cooccurrence"],
                threshold,
            )
        share = world_named_share(table, top_concepts)
        share["names"] = [r["name"] for r in share.pop("concepts")]
        result[method] = share
    return result
