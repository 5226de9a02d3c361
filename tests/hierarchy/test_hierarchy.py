import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insight.core.io import write_parquet
from insight.hierarchy.cooccurrence import (
    CooccurrencePartial,
    concept_blocks,
    cooccurrence_table,
    reduce_blocks,
    reduce_partials,
    totals_table,
)
from insight.hierarchy.families import (
    FamilyCriterion,
    ancestors,
    dag_summary,
    descendants,
    edge_evidence,
    family_dag,
    family_subgraph,
    load_families,
    write_families,
)
from insight.hierarchy.streaming import shards_partial
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


def _tables_from_confidences(entries, frequency, baseline=None, images=None):
    """Hand-written D entries {(concept, other): D} (halves equal to the whole) and
    per-concept frequencies; D0 = ``baseline`` (default 0), images = ``images`` (default 100)."""
    baseline = baseline or {}
    d = pa.array(list(entries.values()), pa.float32())
    d0 = pa.array([baseline.get(k, 0.0) for k in entries], pa.float32())
    cooc = pa.table(
        {
            "concept": pa.array([k[0] for k in entries], pa.int32()),
            "other": pa.array([k[1] for k in entries], pa.int32()),
            "confidence": d,
            "baseline": d0,
            "images": pa.array([10] * len(entries), pa.int32()),
            "confidence_even": d,
            "baseline_even": d0,
            "confidence_odd": d,
            "baseline_odd": d0,
        }
    )
    n = images or [100] * len(frequency)
    totals = pa.table(
        {
            "concept": pa.array(range(len(frequency)), pa.int32()),
            "total_activation": pa.array([float(f) for f in frequency]),
            "frequency": pa.array(frequency, pa.int64()),
            "images": pa.array(n, pa.int64()),
            "coverage": pa.array([0.1] * len(frequency)),
            "images_even": pa.array([v // 2 for v in n], pa.int64()),
            "images_odd": pa.array([v - v // 2 for v in n], pa.int64()),
        }
    )
    return cooc, totals


def _dag_from_confidences(entries, frequency, criterion="confidence", **extra):
    cooc, totals = _tables_from_confidences(entries, frequency, **extra)
    return family_dag(cooc, totals, FamilyCriterion(criterion))


def test_edges_are_inverted_so_parents_are_general():
    # D[1, 0] = 0.9: whenever 1 fires, 0 fires -> 0 is a parent of 1
    graph, report = _dag_from_confidences({(1, 0): 0.9, (0, 1): 0.2, (2, 0): 0.74}, [100, 10, 5])
    assert list(graph.edges) == [(0, 1)]
    assert report["dropped_edges"] == {"equivalent_pairs": 0, "cycles": 0}


def test_a_pair_passing_both_ways_is_listed_as_equivalent_not_oriented():
    graph, report = _dag_from_confidences({(0, 1): 0.8, (1, 0): 0.95, (2, 0): 0.9}, [10, 50, 5])
    assert list(graph.edges) == [(0, 2)]
    assert report["dropped_edges"]["equivalent_pairs"] == 1
    assert report["equivalents"].to_pylist() == [
        {
            "concept": 0,
            "other": 1,
            "confidence": pytest.approx(0.8),
            "confidence_back": pytest.approx(0.95),
        }
    ]


def test_three_cycle_drops_its_weakest_edge():
    # parent->child edges 0->1 (D[1,0]=.9), 1->2 (D[2,1]=.85), 2->0 (D[0,2]=.8): a 3-cycle
    graph, report = _dag_from_confidences({(1, 0): 0.9, (2, 1): 0.85, (0, 2): 0.8}, [30, 20, 10])
    assert nx.is_directed_acyclic_graph(graph)
    assert set(graph.edges) == {(0, 1), (1, 2)}
    assert report["dropped_edges"] == {"equivalent_pairs": 0, "cycles": 1}


def test_implied_edges_are_marked_not_direct():
    # 0 -> 1 -> 2 and the implied 0 -> 2 (D[2, 0] also >= 0.75)
    graph, _ = _dag_from_confidences({(1, 0): 0.9, (2, 1): 0.9, (2, 0): 0.8}, [30, 20, 10])
    assert dict(((p, c), d) for p, c, d in graph.edges(data="direct")) == {
        (0, 1): True,
        (1, 2): True,
        (0, 2): False,
    }


def test_the_baseline_criterion_drops_edges_explained_by_the_parents_coverage():
    """D[1, 0] = D[2, 0] = 0.9; concept 0 covers 88% of the patches of 1's images (D0 = 0.88)
    but 10% of 2's: under ``confidence`` both are children of 0, under ``baseline`` only 2.
    With n = 100 images and z = 1.96, Wilson's bound by hand: (0.9 + z^2/200 - z sqrt(0.09/100
    + z^2/40000)) / (1 + z^2/100) = 0.85735 / 1.038416 = 0.82563, H = (0.82563 - 0.1) / 0.9."""
    entries = {(1, 0): 0.9, (2, 0): 0.9}
    baseline = {(1, 0): 0.88, (2, 0): 0.1}
    confidence, _ = _dag_from_confidences(entries, [100, 10, 10], baseline=baseline)
    lifted, _ = _dag_from_confidences(entries, [100, 10, 10], "baseline", baseline=baseline)
    assert set(confidence.edges) == {(0, 1), (0, 2)}
    assert set(lifted.edges) == {(0, 2)}
    edge = lifted.edges[0, 2]
    assert edge["lower_bound"] == pytest.approx(0.82563, abs=1e-5)
    assert edge["lift"] == pytest.approx((0.82563 - 0.1) / 0.9, abs=1e-5)
    # the same D from 3 images: LB(0.9, n=3) = 0.43, H < 0.5 -> no edge
    few, _ = _dag_from_confidences(
        entries, [100, 10, 10], "baseline", baseline=baseline, images=[100, 3, 3]
    )
    assert few.number_of_edges() == 0


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
        graph, report = _dag_from_confidences(entries, rng.integers(1, 100, size=n).tolist())
        dropped = report["dropped_edges"]
        assert nx.is_directed_acyclic_graph(graph)
        assert dropped["equivalent_pairs"] > 0 and dropped["cycles"] > 0
        summary = dag_summary(graph, dropped)
        assert summary["edges"] == graph.number_of_edges()


def test_helpers_and_files(tmp_path):
    graph, report = _dag_from_confidences(
        {(1, 0): 0.9, (2, 1): 0.9, (3, 1): 0.8, (3, 4): 0.9, (6, 5): 0.8},
        [50, 30, 10, 5, 40, 20, 5],
    )
    dropped = report["dropped_edges"]
    assert ancestors(graph, 3) == {0, 1, 4}
    assert descendants(graph, 0) == {1, 2, 3}
    assert set(family_subgraph(graph, 1).nodes) == {0, 1, 2, 3}
    assert set(family_subgraph(graph, 99).nodes) == {99}
    summary = dag_summary(graph, dropped)
    assert summary["families"] == 2 and summary["multi_parent_concepts"] == 1
    assert summary["depth_histogram"] == [3, 2, 2]
    write_families(graph, tmp_path / "families.parquet", tmp_path / "families.graphml")
    table = pq.read_table(tmp_path / "families.parquet")
    assert table.column_names == [
        "parent",
        "child",
        "confidence",
        "baseline",
        "lower_bound",
        "lift",
        "images",
        "direct",
        "replicates",
    ]
    for path in ("families.parquet", "families.graphml"):
        assert set(load_families(tmp_path / path).edges) == set(graph.edges)


def test_partial_roundtrip_dense_and_sparse(tmp_path):
    for density in (0.1, 0.9):
        partial = CooccurrencePartial.zeros(20)
        rng = np.random.default_rng(0)
        for i, half in enumerate(partial.halves):
            half.numerator[rng.random((20, 20)) < density] = 1.5 + i
            half.baseline[rng.random((20, 20)) < density] = 0.25
            half.pair_images[rng.random((20, 20)) < density] = 3
            half.total[:] = 2.0
            half.images[:] = 4 + i
            half.patches, half.image_count = 7, 2
        partial.save(tmp_path / "p.safetensors")
        loaded = CooccurrencePartial.load(tmp_path / "p.safetensors")
        for mine, theirs in zip(loaded.halves, partial.halves, strict=True):
            for name in ("numerator", "baseline", "pair_images", "total", "images"):
                np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name))
        assert loaded.patches == 14 and loaded.halves[1].image_count == 2
    totals = totals_table(loaded)
    assert totals.column_names == [
        "concept",
        "total_activation",
        "frequency",
        "images",
        "coverage",
        "images_even",
        "images_odd",
    ]
    assert totals["images"].to_pylist() == [9] * 20


def test_concept_ids_out_of_range_are_refused(tmp_path):
    a, images, patches = random_activations()
    paths = write_concept_shards(tmp_path, a, images, patches, 1)
    with pytest.raises(ValueError, match="concept ids"):
        shards_partial(paths, d_sae=5)


def _oracle_sums(a, images, patches, image_ids):
    """Dense numpy sums over the images ``image_ids``: D's numerator and totals, the
    baseline numerator sum_g W_j(g) n_j'(g) / P_g, images where both fire, images where j
    fires, and the summed patch shares."""
    a = a.astype(np.float64).reshape(M, images, patches)[:, image_ids]
    mass = a.sum(2)
    fired = (a > 0).sum(2)
    flat = a.reshape(M, -1)
    return {
        "numerator": flat @ (flat > 0).T,
        "total": flat.sum(1),
        "baseline": mass @ (fired / patches).T,
        "pair_images": (fired > 0).astype(np.int64) @ (fired > 0).T.astype(np.int64),
        "images": (fired > 0).sum(1),
        "coverage": (fired / patches).sum(1),
    }


def _wilson_by_roots(share, n, z):
    """Wilson's lower bound as the smaller root of (1 + z^2/n) x^2 - (2p + z^2/n) x + p^2."""
    if n == 0:
        return 0.0
    roots = np.roots([1 + z * z / n, -(2 * share + z * z / n), share * share])
    return float(min(roots.real))


def _ratio(numerator, total):
    return np.divide(numerator, total, out=np.zeros_like(numerator, dtype=float), where=total > 0)


@pytest.mark.parametrize("shards", [1, 2, 5])
def test_baseline_bound_lift_and_replicates_match_a_dense_oracle(tmp_path, shards):
    """D0, the images where both fire, the Wilson bound, H and ``replicates`` against dense
    numpy on random codes, from one shard and from several (halves: even / odd shards)."""
    a, images, patches = random_activations(seed=4, images=10)
    partial = pipeline_d(tmp_path, a, images, patches, shards=shards, per_partial=2)
    groups = np.array_split(np.arange(images), shards)
    halves = [np.concatenate(groups[h::2]) if groups[h::2] else np.zeros(0, int) for h in (0, 1)]
    whole = _oracle_sums(a, images, patches, np.arange(images))
    half_sums = [_oracle_sums(a, images, patches, ids) for ids in halves]

    table = cooccurrence_table(partial, floor=0.0)
    concept, other = table["concept"].to_numpy(), table["other"].to_numpy()
    d = _ratio(whole["numerator"], whole["total"][:, None])
    d0 = _ratio(whole["baseline"], whole["total"][:, None])
    np.testing.assert_allclose(table["confidence"].to_numpy(), d[concept, other], rtol=1e-5)
    np.testing.assert_allclose(table["baseline"].to_numpy(), d0[concept, other], rtol=1e-5)
    assert table["images"].to_numpy().tolist() == whole["pair_images"][concept, other].tolist()
    for name, sums in zip(("even", "odd"), half_sums, strict=True):
        half_d = _ratio(sums["numerator"], sums["total"][:, None])
        half_d0 = _ratio(sums["baseline"], sums["total"][:, None])
        np.testing.assert_allclose(
            table[f"confidence_{name}"].to_numpy(), half_d[concept, other], rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            table[f"baseline_{name}"].to_numpy(), half_d0[concept, other], rtol=1e-5, atol=1e-7
        )
    totals = totals_table(partial)
    assert totals["images"].to_pylist() == whole["images"].tolist()
    np.testing.assert_allclose(
        totals["coverage"].to_numpy(), _ratio(whole["coverage"], whole["images"]), rtol=1e-9
    )

    criterion = FamilyCriterion("baseline", threshold=0.3, lift=0.1, z=1.0)
    evidence = edge_evidence(table, totals, criterion).to_pylist()
    expected = set()
    for c, p in zip(*np.nonzero(d >= 0.3), strict=True):
        if c == p or d[c, p] == 0:
            continue
        lower = _wilson_by_roots(d[c, p], whole["images"][c], 1.0)
        h = (lower - d0[c, p]) / (1 - d0[c, p]) if d0[c, p] < 1 else 0.0
        if h >= 0.1:
            expected.add((int(c), int(p)))
    assert {(row["concept"], row["other"]) for row in evidence} == expected and expected
    for row in evidence:
        c, p = row["concept"], row["other"]
        lower = _wilson_by_roots(d[c, p], whole["images"][c], 1.0)
        assert row["lower_bound"] == pytest.approx(lower, abs=1e-5)
        assert row["lift"] == pytest.approx((lower - d0[c, p]) / (1 - d0[c, p]), abs=1e-5)
        replicated = True
        for sums in half_sums:
            half_d = _ratio(sums["numerator"][c, p], sums["total"][c])
            half_d0 = _ratio(sums["baseline"][c, p], sums["total"][c])
            half_lower = _wilson_by_roots(half_d, sums["images"][c], 1.0)
            half_h = (half_lower - half_d0) / (1 - half_d0) if half_d0 < 1 else 0.0
            replicated &= bool(half_d >= 0.3 and half_h >= 0.1)
        assert row["replicates"] == replicated
    if shards == 1:  # the odd half holds no image: nothing replicates
        assert not any(row["replicates"] for row in evidence)


@pytest.mark.parametrize("blocks", [2, 5, M])
def test_blocks_of_concepts_give_the_same_tables_as_one_pass(tmp_path, blocks):
    """Partials of blocks of rows, reduced one block at a time: the same D, D0, images,
    halves and totals as unblocked partials, and each partial holds only its rows."""
    a, images, patches = random_activations(seed=3)
    paths = write_concept_shards(tmp_path, a, images, patches, 3)
    whole = [tmp_path / f"whole-{i}.safetensors" for i in range(2)]
    shards_partial(paths[:2], M).save(whole[0])
    shards_partial(paths[2:], M).save(whole[1])
    expected = reduce_blocks(whole, M, 0.05)
    parts = []
    for lo, hi in concept_blocks(M, blocks):
        for i, group in enumerate((paths[:2], paths[2:])):
            partial = shards_partial(group, M, rows_per_batch=5, rows=(lo, hi))
            assert partial.halves[0].numerator.shape == (hi - lo, M)
            parts.append(tmp_path / f"part-{i}.block-{lo}.safetensors")
            partial.save(parts[-1])
    got = reduce_blocks(parts[::-1], M, 0.05)
    for want, have in zip(expected, got, strict=True):
        assert have.schema == want.schema and have.num_rows == want.num_rows
        keys = [(c, "ascending") for c in ("concept", "other") if c in want.column_names]
        assert have.sort_by(keys).equals(want.sort_by(keys))
    np.testing.assert_allclose(
        reduce_partials(whole, M).confidence(), dense_d(a), rtol=1e-6, atol=1e-7
    )


def test_blocks_must_cover_every_concept_once(tmp_path):
    a, images, patches = random_activations()
    paths = write_concept_shards(tmp_path, a, images, patches, 1)
    shards_partial(paths, M, rows=(0, 5)).save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match=r"do not cover concepts 0..12 once"):
        reduce_blocks([tmp_path / "a.safetensors"], M, 0.05)
    assert concept_blocks(10, 3) == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ValueError, match="concept_blocks must be in 1..10"):
        concept_blocks(10, 11)
    with pytest.raises(ValueError, match="added to one of"):
        reduce_partials([tmp_path / "a.safetensors"], M)
