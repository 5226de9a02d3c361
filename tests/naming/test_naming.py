import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from insight.core.io import write_parquet
from insight.core.settings import section_settings
from insight.models.prompts import RELEASE_TEMPLATES, template_embeddings
from insight.models.text import EmbeddingCache, TextEncoder, encode_text_cut
from insight.naming.names import concept_vectors, names_table, top_patch_weights
from insight.naming.vocabulary import (
    build_index,
    build_vocabulary,
    collect_sources,
    concreteness_terms,
    embedding_table,
    list_terms,
    normalise_term,
    user_embedding_table,
)
from insight.sae.encode import concept_schema


def test_cut_context_equals_open_clip_encode_text(tiny_clip):
    model, _, tokenizer = tiny_clip
    prompts = [
        "a dog.",
        "a photo of a very small red bicycle leaning on a wall in the rain",
        "x",
        "ice cream",
    ]
    tokens = tokenizer(prompts)
    with torch.no_grad():
        full = model.encode_text(tokens)
        cut = encode_text_cut(model, tokens)
    torch.testing.assert_close(cut, full, atol=1e-4, rtol=0)
    assert int((tokens != 0).sum(1).max()) < tokens.shape[1]  # the cut really shortened it


def test_text_encoder_sorts_and_restores_order(tiny_clip):
    model, _, tokenizer = tiny_clip
    prompts = ["a long prompt with many many words in it", "b", "a medium prompt", "c c"]
    encoder = TextEncoder(model, tokenizer, "tiny", batch_size=2)
    with torch.no_grad():
        expected = model.encode_text(tokenizer(prompts)).numpy()
    np.testing.assert_allclose(encoder.encode(prompts), expected, atol=1e-4)


def test_cache_encodes_only_new_terms(tiny_clip, tmp_path):
    model, _, tokenizer = tiny_clip
    terms = [f"word{i}" for i in range(20)]
    encoder = TextEncoder(model, tokenizer, "tiny", cache=EmbeddingCache(tmp_path, "tiny"))
    first = template_embeddings(terms, encoder.encode, RELEASE_TEMPLATES)
    # 27 distinct prompts per term: "{}" opens all three sets, "something that is {}" two
    distinct = len({t for templates in RELEASE_TEMPLATES.values() for t in templates})
    assert distinct == 27 and encoder.encoded == 20 * distinct
    # a new process: the cache is read from disk; 10 extra terms cost 10 terms' prompts
    encoder = TextEncoder(model, tokenizer, "tiny", cache=EmbeddingCache(tmp_path, "tiny"))
    second = template_embeddings(
        terms + [f"extra{i}" for i in range(10)], encoder.encode, RELEASE_TEMPLATES
    )
    assert encoder.encoded == 10 * distinct
    # every other lookup (30 per term, one per template) is a hit
    assert encoder.cache.misses == 10 * distinct and encoder.cache.hits == 30 * 30 - 10 * distinct
    for pos in RELEASE_TEMPLATES:
        np.testing.assert_allclose(second[pos][:20], first[pos], atol=1e-6)
    # another model never reuses these entries
    other = TextEncoder(
        model, tokenizer, "another-model", cache=EmbeddingCache(tmp_path, "another-model")
    )
    template_embeddings(terms[:2], other.encode, RELEASE_TEMPLATES)
    assert other.encoded == 2 * distinct


def test_cache_reads_only_the_rows_asked_for_across_parts_and_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(EmbeddingCache, "ROW_GROUP", 3)
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path, "m")
    first, second = rng.random((10, 4), np.float32), rng.random((5, 4), np.float32)
    cache.add([f"p{i}" for i in range(10)], first)
    cache.add([f"q{i}" for i in range(5)], second)
    reopened = EmbeddingCache(tmp_path, "m")  # only the keys are loaded
    assert len(reopened) == 15 and pq.ParquetFile(reopened.parts[0]).num_row_groups == 4
    # the key index: 20 bytes of digest and 8 of (part, row) per prompt, sorted
    assert reopened.digests.nbytes + reopened.places.nbytes == 15 * 28
    digests = [bytes(d) for d in reopened.digests]
    assert digests == sorted(set(digests))
    prompts = ["q4", "p7", "p0", "q0", "p7", "p9"]
    expected = np.stack([{"p": first, "q": second}[p[0]][int(p[1:])] for p in prompts])
    np.testing.assert_array_equal(reopened.get([reopened.key(p) for p in prompts]), expected)
    assert reopened.key("p0") in reopened and reopened.key("zz") not in reopened
    with pytest.raises(KeyError, match="not in the prompt cache"):
        reopened.get([reopened.key("p0"), reopened.key("zz")])


def test_template_embedding_is_normalised_mean_of_normalised_eq_b11():
    rng = np.random.default_rng(0)
    table = {}

    def encode(prompts):
        for p in prompts:
            table.setdefault(p, rng.normal(size=4))
        return np.stack([table[p] for p in prompts])

    out = template_embeddings(["cat"], encode, RELEASE_TEMPLATES)
    # the release's exact prompts, each set averaged on its own
    assert "to cat" in table and "someone who is cat" in table and "cat" in table
    for pos, templates in RELEASE_TEMPLATES.items():
        raw = np.stack([table[t.format("cat")] for t in templates])
        mean = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).mean(0)
        np.testing.assert_allclose(out[pos][0], mean / np.linalg.norm(mean), atol=1e-12)
    assert all(len(t) == 10 for t in RELEASE_TEMPLATES.values()) and set(RELEASE_TEMPLATES) == {
        "noun",
        "verb",
        "adjective",
    }


def test_template_embeddings_in_chunks_equal_all_at_once():
    rng = np.random.default_rng(1)
    table = {}
    calls = []

    def encode(prompts):
        calls.append(len(prompts))
        for p in prompts:
            table.setdefault(p, rng.normal(size=4))
        return np.stack([table[p] for p in prompts])

    terms = [f"term{i}" for i in range(7)]
    whole = template_embeddings(terms, encode, RELEASE_TEMPLATES)
    calls.clear()
    chunked = template_embeddings(terms, encode, RELEASE_TEMPLATES, chunk=3)
    assert calls == [30, 30, 10] * 3  # 3, 3 and 1 terms x 10 templates, per part of speech
    for pos in RELEASE_TEMPLATES:
        np.testing.assert_array_equal(chunked[pos], whole[pos])


def test_vocabulary_union_normalises_and_records_sources(tmp_path):
    (tmp_path / "mine.txt").write_text("Red Car\n  blue   sky \n\nred car\n#comment\n")
    pa_path = tmp_path / "laion.parquet"
    write_parquet(pa.table({"term": ["sky", "sailboat"]}), pa_path)
    vocabulary, dropped = build_vocabulary(
        {"list:mine.txt": list_terms(tmp_path / "mine.txt"), "laion": list_terms(pa_path)}
    )
    assert list(dropped) == ["characters other than letters, digits, space and ' - & ."]
    rows = dict(zip(vocabulary["term"].to_pylist(), vocabulary["sources"].to_pylist(), strict=True))
    assert rows == {
        "blue sky": ["list:mine.txt"],
        "red car": ["list:mine.txt"],
        "sailboat": ["laion"],
        "sky": ["laion"],
    }
    assert normalise_term("  Ice   Cream ") == "ice cream"
    assert normalise_term("") is None and normalise_term("<script>") is None


def test_accented_terms_are_kept_and_every_left_out_term_is_counted():
    vocabulary, dropped = build_vocabulary(
        {
            "mine": [
                "Café",
                "crème brûlée",
                "piñata",
                "a b c d e",
                "one two three four five six",
                "<b>",
                "x" * 60,
                "",
            ]
        }
    )
    assert vocabulary["term"].to_pylist() == ["café", "crème brûlée", "piñata"]
    assert {reason: entry["count"] for reason, entry in dropped.items()} == {
        "over 4 words": 2,
        "characters other than letters, digits, space and ' - & .": 1,
        "over 48 characters": 1,
    }
    assert dropped["over 4 words"]["examples"] == ["a b c d e", "one two three four five six"]


def test_sources_from_packages_and_thresholds(tmp_path):
    csv = tmp_path / "norms.csv"
    csv.write_text(
        "Word,Brysbaert,Muraki\napple,4.9,\nidea,1.6,\nbus stop,4.9,4.5\nbad idea,,1.5\n"
    )
    found = concreteness_terms(str(csv), 2.5, 2.0)
    assert found == {"brysbaert": ["apple", "bus stop"], "muraki": ["bus stop"]}
    sources = collect_sources(
        section_settings(
            "vocabulary",
            {
                "wordfreq_top": 50,
                "concreteness": {
                    "enabled": True,
                    "path": None,
                    "brysbaert_min": 2.5,
                    "muraki_min": 2.0,
                },
            },
        )
    )
    assert len(sources["wordfreq"]) == 50 and "the" in sources["wordfreq"]
    assert "ice cream" in sources["muraki"] and len(sources["brysbaert"]) > 10_000
    with pytest.raises(ValueError, match="no source"):
        collect_sources(
            section_settings("vocabulary", {"wordfreq_top": 0, "concreteness": {"enabled": False}})
        )


def _world():
    """A tiny world in d = 4: 'dog' along e0, 'spots' along e1, 'dalmatian' = dog + spots.
    The child concept's decoder row is the residual e1 (spots); its parent's is e0 (dog)."""
    e = np.eye(4)
    words = {"dog": e[0], "spots": e[1], "dalmatian": (e[0] + e[1]) / np.sqrt(2), "car": e[2]}
    table = embedding_table(
        list(words), {"noun": np.stack(list(words.values())).astype(np.float32)}
    )
    index = build_index(np.stack(table["embedding"].to_numpy(zero_copy_only=False)))
    w_dec = np.stack([e[0], e[1], e[2]])  # concept 0 = dog (parent), 1 = child residual, 2 = car
    families = pa.table(
        {
            "parent": pa.array([0], pa.int32()),
            "child": pa.array([1], pa.int32()),
            "confidence": pa.array([0.9], pa.float32()),
        }
    )
    weights = pa.table(
        {
            "concept": pa.array([0, 1, 1, 2], pa.int32()),
            "other": pa.array([0, 0, 1, 2], pa.int32()),
            "weight": [2.0, 1.5, 1.2, 1.0],
        }
    )
    return table, index, w_dec, families, weights


def test_hierarchy_names_a_child_right_where_its_decoder_alone_is_wrong():
    table, index, w_dec, families, weights = _world()
    terms = table["term"].to_pylist()
    b_dec = np.zeros(4)
    groups, frequency = np.array([0, 1, 1]), np.array([10, 5, 7])
    decoder = names_table(
        concept_vectors(w_dec, b_dec, "decoder"), index, terms, "decoder", groups, frequency
    )
    hierarchy = names_table(
        concept_vectors(w_dec, b_dec, "hierarchy", weights, families, alpha=1.33),
        index,
        terms,
        "hierarchy",
        groups,
        frequency,
    )
    assert decoder["name"].to_pylist() == ["dog", "spots", "car"]
    assert hierarchy["name"].to_pylist() == ["dog", "dalmatian", "car"]
    # Eq. B.9 by hand for the child: 1.33 * 1.2 * e1 + 0.9 * 1.5 * e0
    v = concept_vectors(w_dec, b_dec, "hierarchy", weights, families)[1]
    np.testing.assert_allclose(v, [0.9 * 1.5, 1.33 * 1.2, 0, 0])
    assert hierarchy["runner_up"][1].as_py()[0] in ("spots", "dog")


def test_silent_concepts_are_not_named():
    table, index, w_dec, families, weights = _world()
    names = names_table(
        w_dec, index, table["term"].to_pylist(), "decoder", np.zeros(3), np.array([3, 0, 1])
    )
    assert names["name"].to_pylist()[1] is None and np.isnan(names["score"].to_pylist()[1])


def test_top_patch_weights_by_hand(tmp_path):
    # concept 5 fires on 3 patches (top-2: p0 (3.0), p2 (2.0)); parent 7 fires on p0 (1.0) only
    rows = [
        ("a", 0, 5, 3.0),
        ("a", 0, 7, 1.0),
        ("a", 1, 5, 1.0),
        ("b", 2, 5, 2.0),
        ("b", 2, 9, 4.0),
        ("b", 3, 7, 6.0),
    ]
    table = pa.table(
        {
            "image_id": [r[0] for r in rows],
            "patch": pa.array([r[1] for r in rows], pa.int32()),
            "concept": pa.array([r[2] for r in rows], pa.int32()),
            "activation": pa.array([r[3] for r in rows], pa.float32()),
        },
        schema=concept_schema("2,2", 10),
    )
    write_parquet(table, tmp_path / "shard-00000.parquet")
    families = pa.table(
        {
            "parent": pa.array([7], pa.int32()),
            "child": pa.array([5], pa.int32()),
            "confidence": pa.array([0.8], pa.float32()),
        }
    )
    weights = top_patch_weights([tmp_path / "shard-00000.parquet"], families, top=2)
    got = {
        (c, o): w
        for c, o, w in zip(
            *(weights[k].to_pylist() for k in ("concept", "other", "weight")), strict=True
        )
    }
    assert got[(5, 5)] == pytest.approx((3.0 + 2.0) / 2)
    assert got[(5, 7)] == pytest.approx((1.0 + 0.0) / 2)
    assert got[(7, 7)] == pytest.approx((6.0 + 1.0) / 2)
    assert (5, 9) not in got  # 9 is not a parent of 5
    every = top_patch_weights([tmp_path / "shard-00000.parquet"], None, top=2)
    pairs = {
        (c, o): w
        for c, o, w in zip(
            *(every[k].to_pylist() for k in ("concept", "other", "weight")), strict=True
        )
    }
    assert pairs[(5, 9)] == pytest.approx((0.0 + 4.0) / 2)  # the release reads every concept
    assert {k: v for k, v in pairs.items() if k in got} == pytest.approx(got)
    # concept 9 fires on one patch: the release divides by top all the same
    assert pairs[(9, 9)] == pytest.approx(4.0 / 2)
    active = top_patch_weights([tmp_path / "shard-00000.parquet"], None, 2, "active")
    by_pair = dict(
        zip(
            zip(active["concept"].to_pylist(), active["other"].to_pylist(), strict=True),
            active["weight"].to_pylist(),
            strict=True,
        )
    )
    assert by_pair[(9, 9)] == pytest.approx(4.0) and by_pair[(5, 5)] == pytest.approx(2.5)


def test_release_naming_vector_by_hand_on_three_concepts():
    w_dec = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b_dec = np.array([0.5, 0.0])
    # t[i, a]: mean activation of a over i's top patches
    t = {(0, 0): 2.0, (0, 1): 1.0, (0, 2): 0.5, (1, 1): 1.0, (2, 2): 3.0, (2, 0): 1.0}
    weights = pa.table(
        {
            "concept": [c for c, _ in t],
            "other": [o for _, o in t],
            "weight": list(t.values()),
        }
    )
    d = {(0, 1): 0.8, (0, 2): 0.5, (2, 0): 0.9, (1, 0): 0.3}  # only D > 0.75 joins a family
    cooccurrence = pa.table(
        {
            "concept": pa.array([c for c, _ in d], pa.int32()),
            "other": pa.array([o for _, o in d], pa.int32()),
            "confidence": pa.array(list(d.values()), pa.float32()),
        }
    )
    vectors = concept_vectors(
        w_dec, b_dec, "release", weights, None, 1.33, cooccurrence, threshold=0.75
    )
    # families: 0 -> {0: 1, 1: 0.8}; 1 -> {1: 1}; 2 -> {2: 1, 0: 0.9}
    w = np.array([[2.0, 0.8, 0.0], [0.0, 1.0, 0.0], [0.9, 0.0, 3.0]])
    norm_t = np.array([np.sqrt(4 + 1 + 0.25), 1.0, np.sqrt(9 + 1)])
    target = 1.33 * norm_t.mean()
    expected = (target * w / np.linalg.norm(w, axis=1, keepdims=True)) @ w_dec + b_dec
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    # row 0 by hand: w0 = (2, 0.8, 0) / sqrt(4.64) * target -> (2, 0.8) direction
    scale = target / np.sqrt(4.64)
    np.testing.assert_allclose(vectors[0], [2 * scale + 0.5, 0.8 * scale], rtol=1e-6)
    # a fourth, dead concept (no top patches) counts in the mean norm, as released
    dead = concept_vectors(
        np.vstack([w_dec, [[2.0, 2.0]]]), b_dec, "release", weights, None, 1.33, cooccurrence
    )
    scale_dead = 1.33 * norm_t.sum() / 4 / np.sqrt(4.64)
    np.testing.assert_allclose(dead[0], [2 * scale_dead + 0.5, 0.8 * scale_dead], rtol=1e-6)
    np.testing.assert_allclose(dead[3], b_dec)  # no weights: the bias alone


def test_user_embeddings_are_normalised(tmp_path):
    vectors = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    write_parquet(
        pa.table(
            {
                "term": ["a", "b"],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 2),
            }
        ),
        tmp_path / "e.parquet",
    )
    table = user_embedding_table(tmp_path / "e.parquet")
    np.testing.assert_allclose(
        np.stack(table["embedding"].to_numpy(zero_copy_only=False)), [[0.6, 0.8], [0, 1]], atol=1e-6
    )
    write_parquet(pa.table({"word": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="term and embedding"):
        user_embedding_table(tmp_path / "bad.parquet")


def test_hnsw_and_flat_agree_on_the_best_term():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    flat = build_index(vectors, "flat").search(queries, 1)[1][:, 0]
    hnsw = build_index(vectors, "hnsw").search(queries, 1)[1][:, 0]
    assert (flat == np.arange(20)).all() and (hnsw == flat).mean() >= 0.95


def test_naming_reads_all_or_only_direct_parents():
    """0 -> 1 -> 2 with the implied 0 -> 2 (D = 0.8, w = 0.5): under ``all`` concept 2's
    B.9 vector adds 0.8 * 0.5 * W_dec[0], under ``direct`` it does not; nothing else moves."""
    from insight.naming.names import naming_parents

    families = pa.table(
        {
            "parent": pa.array([0, 1, 0], pa.int32()),
            "child": pa.array([1, 2, 2], pa.int32()),
            "confidence": pa.array([0.9, 0.95, 0.8], pa.float32()),
            "direct": [True, True, False],
        }
    )
    weights = pa.table(
        {
            "concept": pa.array([0, 1, 1, 2, 2, 2], pa.int32()),
            "other": pa.array([0, 1, 0, 2, 1, 0], pa.int32()),
            "weight": [1.0, 1.0, 0.5, 1.0, 0.5, 0.5],
        }
    )
    w_dec, b_dec = np.eye(3), np.zeros(3)
    every = concept_vectors(w_dec, b_dec, "hierarchy", weights, naming_parents(families, "all"))
    direct = naming_parents(families, "direct")
    assert direct.num_rows == 2 and direct["direct"].to_pylist() == [True, True]
    only = concept_vectors(w_dec, b_dec, "hierarchy", weights, direct)
    np.testing.assert_allclose(every[2] - only[2], [np.float32(0.8) * 0.5, 0, 0])
    np.testing.assert_allclose(every[:2], only[:2])
    with pytest.raises(ValueError, match="naming.parents must be one of"):
        naming_parents(families, "ancestors")


@pytest.mark.parametrize("divide_by", ["top", "active"])
def test_top_patch_weights_stream_shards_to_the_same_weights(tmp_path, divide_by):
    """Rows cut into shards (images split across them, ties in activation included): the
    same weights as one shard holding every row, and as a dense numpy oracle."""
    rng = np.random.default_rng(4)
    rows = []
    for image in range(40):
        for patch in range(4):
            for concept in rng.choice(8, size=rng.integers(1, 4), replace=False):
                rows.append((f"img{image:02d}", patch, int(concept), float(rng.integers(1, 6))))
    columns = list(zip(*rows, strict=True))

    def shard(part, path):
        table = pa.table(
            {
                "image_id": pa.array([columns[0][i] for i in part], pa.string()),
                "patch": pa.array([columns[1][i] for i in part], pa.int32()),
                "concept": pa.array([columns[2][i] for i in part], pa.int32()),
                "activation": pa.array([columns[3][i] for i in part], pa.float32()),
            },
            schema=concept_schema("2,2", 8),
        )
        write_parquet(table, path)
        return path

    one = [shard(range(len(rows)), tmp_path / "one.parquet")]
    cuts = np.array_split(rng.permutation(len(rows)), 3)
    three = [shard(sorted(c), tmp_path / f"shard-{i}.parquet") for i, c in enumerate(cuts)]
    whole = top_patch_weights(one, None, 5, divide_by)
    streamed = top_patch_weights(three, None, 5, divide_by)
    assert whole["concept"].equals(streamed["concept"]) and whole["other"].equals(streamed["other"])
    np.testing.assert_allclose(whole["weight"].to_numpy(), streamed["weight"].to_numpy())
    # the oracle: each concept's top 5 rows by (activation desc, image, patch)
    at = {(r[0], r[1], r[2]): r[3] for r in rows}
    for concept in range(8):
        mine = sorted((-a, i, p) for (i, p, c), a in at.items() if c == concept)[:5]
        for other in range(8):
            total = sum(at.get((i, p, other), 0.0) for _, i, p in mine)
            got = streamed.filter(
                pa.compute.and_(
                    pa.compute.equal(streamed["concept"], concept),
                    pa.compute.equal(streamed["other"], other),
                )
            )["weight"].to_pylist()
            if total == 0:
                assert got == []
                continue
            divisor = 5 if divide_by == "top" else len(mine)
            assert got == [pytest.approx(total / divisor)]
