"""The family criteria on a planted world of concept codes generated directly (no SAE): a
known part-of tree besides what real SAEs also have, dense context concepts, parts firing
without their object, near-duplicate and rare latents."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pyarrow as pa

from insight.core.io import write_parquet
from insight.hierarchy.cooccurrence import cooccurrence_table, reduce_partials, totals_table
from insight.hierarchy.families import FamilyCriterion, family_dag
from insight.hierarchy.streaming import shards_partial
from insight.sae.encode import concept_schema

SIDE = 14
PATCHES = SIDE * SIDE


def planted_codes(images: int = 480, seed: int = 0) -> tuple[list[np.ndarray], nx.DiGraph, dict]:
    """Per image a ``(concepts, patches)`` activation matrix and the planted tree.

    6 objects, each with 3 parts (a third of the object's box each), the first part of each
    with a subpart (half of that part): 30 tree concepts, 24 tree edges. Besides them:
    - ``photo``: fires on 95% of the patches of 90% of the images (a dense context latent);
    - 3 scenes, one per image, each on the patches outside the objects and on 60% of the
      object patches; objects 0-1 appear only in scene 0;
    - each part also appears alone (no object around it) in 10% of the images;
    - a near-duplicate of each object's first part, on 90% of that part's patches;
    - 12 rare latents, each on a few patches of two or three images.
    Returns the codes, the tree (parent -> child) and the alias map (duplicate -> part).
    """
    rng = np.random.default_rng(seed)
    objects = list(range(6))
    parts = {o: [6 + 3 * o + i for i in range(3)] for o in objects}
    subpart = {o: 24 + o for o in objects}
    photo, scenes = 30, [31, 32, 33]
    duplicate = {o: 34 + o for o in objects}
    rare = list(range(40, 52))
    m = 52
    tree = nx.DiGraph()
    for o in objects:
        for p in parts[o]:
            tree.add_edge(o, p)
        tree.add_edge(parts[o][0], subpart[o])
    aliases = {duplicate[o]: parts[o][0] for o in objects}
    rare_images = {r: rng.choice(images, size=rng.integers(2, 4), replace=False) for r in rare}

    codes = []
    for g in range(images):
        a = np.zeros((m, PATCHES), dtype=np.float32)
        grid = np.arange(PATCHES).reshape(SIDE, SIDE)
        scene = int(rng.integers(0, 3))
        covered = np.zeros(PATCHES, dtype=bool)
        present = [o for o in objects if rng.random() < 0.35 and (o >= 2 or scene == 0)]
        for o in present:
            height, width = int(rng.integers(4, 8)), int(rng.integers(6, 10))
            top, left = int(rng.integers(0, SIDE - height)), int(rng.integers(0, SIDE - width))
            box = grid[top : top + height, left : left + width]
            covered[box.ravel()] = True
            a[o, box.ravel()] = rng.uniform(1.0, 2.0, box.size)
            thirds = np.array_split(box, 3, axis=1)
            for p, third in zip(parts[o], thirds, strict=True):
                a[p, third.ravel()] = rng.uniform(0.5, 1.5, third.size)
            first = thirds[0]
            half = first[: max(1, first.shape[0] // 2)].ravel()
            a[subpart[o], half] = rng.uniform(0.3, 1.0, half.size)
            dup = first.ravel()[rng.random(first.size) < 0.9]
            a[duplicate[o], dup] = rng.uniform(0.3, 1.0, dup.size)
        for o in objects:  # parts alone, no object around them
            for p in parts[o]:
                if rng.random() < 0.1:
                    spot = grid[:2, :3].ravel() + SIDE * int(rng.integers(0, SIDE - 2))
                    a[p, spot] = rng.uniform(0.5, 1.5, spot.size)
        on_scene = ~covered | (rng.random(PATCHES) < 0.6)
        a[scenes[scene], on_scene] = rng.uniform(0.5, 1.0, int(on_scene.sum()))
        if rng.random() < 0.9:
            on_photo = rng.random(PATCHES) < 0.95
            a[photo, on_photo] = rng.uniform(0.2, 0.6, int(on_photo.sum()))
        for r, chosen in rare_images.items():
            if g in chosen:
                spot = rng.choice(PATCHES, size=3, replace=False)
                a[r, spot] = rng.uniform(0.5, 1.0, 3)
        codes.append(a)
    return codes, tree, aliases


def write_code_shards(out, codes, shards):
    paths = []
    for s, ids in enumerate(np.array_split(np.arange(len(codes)), shards)):
        image, patch, concept, activation = [], [], [], []
        for g in ids:
            c, p = np.nonzero(codes[g])
            order = np.lexsort((c, p))  # the rows of a patch together, patches in order
            c, p = c[order], p[order]
            image += [f"img{g:05d}"] * len(c)
            patch.append(p)
            concept.append(c)
            activation.append(codes[g][c, p])
        table = pa.table(
            {
                "image_id": pa.array(image, pa.string()),
                "patch": pa.array(np.concatenate(patch).astype(np.int32)),
                "concept": pa.array(np.concatenate(concept).astype(np.int32)),
                "activation": pa.array(np.concatenate(activation).astype(np.float32)),
            },
            schema=concept_schema(f"{SIDE},{SIDE}", codes[0].shape[0]),
        )
        path = out / f"shard-{s:05d}.parquet"
        write_parquet(table, path)
        paths.append(path)
    return paths


def edge_scores(graph: nx.DiGraph, tree: nx.DiGraph, aliases: dict) -> tuple[float, float]:
    """Precision (an edge is right when its parent is a planted ancestor of its child, a
    duplicate standing for its part) and recall (planted edges the DAG implies)."""

    def planted(concept):
        return aliases.get(concept, concept)

    edges = list(graph.edges)
    right = sum(
        1 for p, c in edges if planted(c) in tree and planted(p) in nx.ancestors(tree, planted(c))
    )
    found = sum(1 for p, c in tree.edges if p in graph and c in graph and nx.has_path(graph, p, c))
    return right / max(len(edges), 1), found / tree.number_of_edges()


def test_the_baseline_criterion_recovers_the_planted_tree_and_drops_the_hubs(tmp_path):
    codes, tree, aliases = planted_codes()
    paths = write_code_shards(tmp_path, codes, shards=4)
    m = codes[0].shape[0]
    for i, group in enumerate((paths[:2], paths[2:])):
        shards_partial(group, m).save(tmp_path / f"part-{i}.safetensors")
    partial = reduce_partials([tmp_path / f"part-{i}.safetensors" for i in range(2)], m)
    cooccurrence, totals = cooccurrence_table(partial, 0.05), totals_table(partial)
    results = {}
    for name in ("confidence", "baseline"):
        graph, report = family_dag(cooccurrence, totals, FamilyCriterion(name))
        precision, recall = edge_scores(graph, tree, aliases)
        direct_children = max(
            (sum(1 for _, _, d in graph.out_edges(n, data="direct") if d) for n in graph),
            default=0,
        )
        results[name] = {
            "edges": graph.number_of_edges(),
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "photo_children": graph.out_degree(30) if 30 in graph else 0,
            "max_direct_children": direct_children,
            "equivalent_pairs": report["equivalents"].num_rows,
        }
    print("planted families:", results)
    assert results["baseline"]["precision"] >= 0.8 and results["baseline"]["recall"] >= 0.7
    assert results["baseline"]["photo_children"] == 0
    assert results["confidence"]["photo_children"] > 20  # the dense hub the paper's rule keeps
    coverage = totals["coverage"].to_numpy()
    assert coverage[30] > 0.9 and coverage[:6].max() < 0.5
