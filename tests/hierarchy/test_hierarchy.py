import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insight.core.io import write_parquet
from insight.hierarchy.cooccurrence import (
    CooccurrencePartial,
    cooccurrence_table,
    reduce_partials,
    shards_partial,
    totals_table,
)
from insight.hierarchy.families import (
    ancestors,
    dag_summary,
    descendants,
    family_dag,
    family_subgraph,
    load_families,
    write_families,
)
from insight.sae.encode import concept_schema

M = 12


def random_activations(seed=0, images=6, patches=16, never_fire=(3, 7)):
    """A dense (M, images * patches) activation matrix; concepts in ``never_fire`` stay 0."""
    rng = np.random.default_rng(seed)
    a = np.zeros((M, images * patches), dtype=np.float32)
    for i in range(images * patches):
        active = rng.choice(
            [c for c in range(M) if c not in never_fire], size=rng.integers(0, 6), replace=False
        )
        a[active, i] = rng.uniform(0.1, 3.0, size=len(active)).astype(np.float32)
    return a, images, patches


def write_concept_shards(out, a, images, patches, shards):
    """The same activations in the concept-shard contract, cut into ``shards`` files."""
    paths = []
    image_groups = np.array_split(np.arange(images), shards)
    for s, group in enumerate(image_groups):
        rows = []
        for image in group:
            for patch in range(patches):
                for concept in np.flatnonzero(a[:, image * patches + patch]):
                    rows.append(
                        (
                            f"img{image:03d}",
                            patch,
                            int(concept),
                            float(a[concept, image * patches + patch]),
                        )
                    )
        table = pa.table(
            {
                "image_id": pa.array([r[0] for r in rows], pa.string()),
                "patch": pa.array([r[1] for r in rows], pa.int32()),
                "concept": pa.array([r[2] for r in rows], pa.int32()),
                "activation": pa.array([r[3] for r in rows], pa.float32()),
            },
            schema=concept_schema(f"4,{patches // 4}", M),
        )
        path = out / f"shard-{s:05d}.parquet"
        write_parquet(table, path, row_group_size=7)
        paths.append(path)
    return paths


def dense_d(a):
    """Eq. 5 by hand: D[j, j'] = sum_i 1[j' at i] A[j, i] / sum_i A[j, i]; 0 rows for silent concepts."""
    a = a.astype(np.float64)
    numerator = a @ (a > 0).T
    total = a.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = numerator / total[:, None]
    d[total == 0] = 0
    return d


def pipeline_d(tmp_path, a, images, patches, shards, per_partial=1):
    paths = write_concept_shards(tmp_path, a, images, patches, shards)
    groups = [paths[i : i + per_partial] for i in range(0, len(paths), per_partial)]
    saved = []
    for i, group in enumerate(groups):
        shards_partial(group, M, rows_per_batch=5).save(tmp_path / f"partial-{i}.safetensors")
        saved.append(tmp_path / f"partial-{i}.safetensors")
    return reduce_partials(saved, M)


def test_d_equals_the_dense_formula_including_silent_concepts(tmp_path):
    a, images, patches = random_activations()
    partial = pipeline_d(tmp_path, a, images, patches, shards=3)
    expected = dense_d(a)
    np.testing.assert_allclose(partial.confidence(), expected, rtol=1e-6, atol=1e-7)
    assert (partial.confidence()[[3, 7]] == 0).all()
    np.testing.assert_allclose(np.diag(partial.confidence())[a.sum(1) > 0], 1.0, rtol=1e-6)
    assert partial.frequency.tolist() == (a > 0).sum(1).tolist()
    table = cooccurrence_table(partial, floor=0.0)
    assert not set(table["concept"].to_pylist()) & {3, 7}
    assert all(
        c != o
        for c, o in zip(table["concept"].to_pylist(), table["other"].to_pylist(), strict=True)
    )


def test_one_shard_or_seven_shards_give_the_same_d(tmp_path):
    a, images, patches = random_activations(seed=1, images=14)
    for name in ("one", "seven", "grouped"):
        (tmp_path / name).mkdir()
    one = pipeline_d(tmp_path / "one", a, images, patches, shards=1)
    seven = pipeline_d(tmp_path / "seven", a, images, patches, shards=7)
    grouped = pipeline_d(tmp_path / "grouped", a, images, patches, shards=7, per_partial=3)
    np.testing.assert_allclose(one.confidence(), seven.confidence(), rtol=1e-6)
    np.testing.assert_allclose(one.confidence(), grouped.confidence(), rtol=1e-6)
    assert one.patches == seven.patches == grouped.patches


def test_floor_keeps_only_entries_above_it(tmp_path):
    a, images, patches = random_activations(seed=2)
    partial = pipeline_d(tmp_path, a, images, patches, shards=2)
    table = cooccurrence_table(partial, floor=0.3)
    assert min(table["confidence"].to_pylist()) >= 0.3
    d = dense_d(a)
    np.fill_diagonal(d, 0)
    assert table.num_rows == int((d >= 0.3).sum())


def _dag_from_confidences(entries, frequency):
    """Build the DAG from hand-written D entries {(concept, other): D} and frequencies."""
    cooc = pa.table(
        {
            "concept": pa.array([k[0] for k in entries], pa.int32()),
            "other": pa.array([k[1] for k in entries], pa.int32()),
            "confidence": pa.array(list(entries.values()), pa.float32()),
        }
    )
    totals = pa.table(
        {
            "concept": pa.array(range(len(frequency)), pa.int32()),
            "total_activation": pa.array([float(f) for f in frequency]),
            "frequency": pa.array(frequency, pa.int64()),
        }
    )
    return family_dag(cooc, totals, threshold=0.75)


def test_edges_are_inverted_so_parents_are_general():
    # D[1, 0] = 0.9: whenever 1 fires, 0 fires -> 0 is a parent of 1
    graph, dropped = _dag_from_confidences({(1, 0): 0.9, (0, 1): 0.2, (2, 0): 0.74}, [100, 10, 5])
    assert list(graph.edges) == [(0, 1)]
    assert dropped == {"mutual_pairs": 0, "cycles": 0}


def test_mutual_pair_keeps_the_edge_from_the_more_frequent_concept():
    graph, dropped = _dag_from_confidences({(0, 1): 0.8, (1, 0): 0.95}, [10, 50])
    assert list(graph.edges) == [(1, 0)]
    assert dropped["mutual_pairs"] == 1


def test_three_cycle_drops_its_weakest_edge():
    # parent->child edges 0->1 (D[1,0]=.9), 1->2 (D[2,1]=.85), 2->0 (D[0,2]=.8): a 3-cycle
    graph, dropped = _dag_from_confidences({(1, 0): 0.9, (2, 1): 0.85, (0, 2): 0.8}, [30, 20, 10])
    assert nx.is_directed_acyclic_graph(graph)
    assert set(graph.edges) == {(0, 1), (1, 2)}
    assert dropped == {"mutual_pairs": 0, "cycles": 1}


def test_adversarial_random_graphs_are_always_dags():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 15
        entries = {
            (i, j): float(rng.uniform(0.75, 1.0))
            for i in range(n)
            for j in range(n)
            if i != j and rng.random() < 0.3
        }
        graph, dropped = _dag_from_confidences(entries, rng.integers(1, 100, size=n).tolist())
        assert nx.is_directed_acyclic_graph(graph)
        assert dropped["mutual_pairs"] > 0 and dropped["cycles"] > 0
        summary = dag_summary(graph, dropped)
        assert summary["edges"] == graph.number_of_edges()


def test_helpers_and_files(tmp_path):
    graph, dropped = _dag_from_confidences(
        {(1, 0): 0.9, (2, 1): 0.9, (3, 1): 0.8, (3, 4): 0.9, (6, 5): 0.8},
        [50, 30, 10, 5, 40, 20, 5],
    )
    assert ancestors(graph, 3) == {0, 1, 4}
    assert descendants(graph, 0) == {1, 2, 3}
    assert set(family_subgraph(graph, 1).nodes) == {0, 1, 2, 3}
    assert set(family_subgraph(graph, 99).nodes) == {99}
    summary = dag_summary(graph, dropped)
    assert summary["families"] == 2 and summary["multi_parent_concepts"] == 1
    assert summary["depth_histogram"] == [3, 2, 2]
    write_families(graph, tmp_path / "families.parquet", tmp_path / "families.graphml")
    table = pq.read_table(tmp_path / "families.parquet")
    assert table.column_names == ["parent", "child", "confidence"]
    for path in ("families.parquet", "families.graphml"):
        assert set(load_families(tmp_path / path).edges) == set(graph.edges)


def test_partial_roundtrip_dense_and_sparse(tmp_path):
    for density in (0.1, 0.9):
        partial = CooccurrencePartial.zeros(20)
        rng = np.random.default_rng(0)
        partial.numerator[rng.random((20, 20)) < density] = 1.5
        partial.total[:] = 2.0
        partial.patches = 7
        partial.save(tmp_path / "p.safetensors")
        loaded = CooccurrencePartial.load(tmp_path / "p.safetensors")
        np.testing.assert_array_equal(loaded.numerator, partial.numerator)
        assert loaded.patches == 7
    totals = totals_table(loaded)
    assert totals.column_names == ["concept", "total_activation", "frequency"]


def test_concept_ids_out_of_range_are_refused(tmp_path):
    a, images, patches = random_activations()
    paths = write_concept_shards(tmp_path, a, images, patches, 1)
    with pytest.raises(ValueError, match="concept ids"):
        shards_partial(paths, d_sae=5)
