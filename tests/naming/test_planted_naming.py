"""The three naming vectors on a planted world with families (the paper's Fig. 3 claim).

Parents are atoms P_j; a child is its parent plus a residual atom C_jk, always active
together, as a "dalmatian" is a dog with spots. The vocabulary holds each parent's term
(P_j), each child's term (the direction of P_j + C_jk, as CLIP's text embedding of
"dalmatian" holds dogness) and each residual's term (C_jk, a "spots"). A concept that
recovers a parent atom should take the parent's term; one that recovers a residual
should take the child's term, not the residual's. Eq. 6 (``decoder``) names residual
concepts by the residual alone; Eq. B.9 (``hierarchy``) adds the parent the family DAG
found. docs/demo.md reports the three scores."""

import json

import numpy as np
import pytest
import torch
from planted import write_shards

from insight.hierarchy.cooccurrence import cooccurrence_table, totals_table
from insight.hierarchy.families import families_table, family_dag
from insight.hierarchy.streaming import shards_partial
from insight.naming.names import concept_vectors, names_table, top_patch_weights
from insight.naming.vocabulary import build_index
from insight.sae.data import FeatureBatches
from insight.sae.encode import encode_shard
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig
from insight.sae.trainer import SAETrainer, TrainConfig

PARENTS, CHILDREN = 6, 3


def family_world(n=24_000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(PARENTS * (1 + CHILDREN), d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    parents, residuals = atoms[:PARENTS], atoms[PARENTS:].reshape(PARENTS, CHILDREN, d)
    x = np.zeros((n, d))
    for row in range(n):
        for j in rng.choice(PARENTS, size=rng.integers(1, 3), replace=False):
            x[row] += rng.uniform(1, 3) * parents[j]
            if rng.random() < 0.6:
                x[row] += rng.uniform(1, 3) * residuals[j, rng.integers(CHILDREN)]
    x += 0.01 * rng.normal(size=x.shape)
    terms, vectors = [], []
    for j in range(PARENTS):
        terms.append(f"parent {j}")
        vectors.append(parents[j])
        for c in range(CHILDREN):
            child = parents[j] + residuals[j, c]
            terms += [f"child {j} {c}", f"trait {j} {c}"]
            vectors += [child / np.linalg.norm(child), residuals[j, c]]
    return x.astype(np.float32), parents, residuals, terms, np.stack(vectors)


def expected_names(w_dec, parents, residuals):
    """The right term for each concept that recovers an atom (cosine > 0.9), else None."""
    unit = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    atoms = np.concatenate([parents, residuals.reshape(-1, parents.shape[1])])
    cos = unit @ atoms.T
    expected = []
    for i in range(len(unit)):
        a = int(cos[i].argmax())
        if cos[i, a] <= 0.9:
            expected.append(None)
        elif a < PARENTS:
            expected.append(f"parent {a}")
        else:
            j, c = divmod(a - PARENTS, CHILDREN)
            expected.append(f"child {j} {c}")
    return expected


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_world")
    x, parents, residuals, terms, vectors = family_world()
    paths = write_shards(root, x)
    config = SAEConfig(d_in=32, d_sae=64, k=4, group_sizes=(8, 56), dead_after=20_000, k_aux=16)
    trainer = SAETrainer(
        MatryoshkaBatchTopKSAE(config, seed=0),
        TrainConfig(lr=3e-3, batch_size=256, epochs=6),
        FeatureBatches(paths, batch_size=256, shuffle_buffer=2048, seed=0),
        None,
    )
    trainer.fit()
    sae = trainer.sae.eval().requires_grad_(False)
    sae.set_threshold(torch.tensor(0.0))  # every positive activation counts here
    concept_paths = []
    for path in paths:
        out = root / f"concepts-{path.name}"
        encode_shard(sae, path, out)
        concept_paths.append(out)
    partial = shards_partial(concept_paths, 64)
    cooccurrence, totals = cooccurrence_table(partial, 0.05), totals_table(partial)
    families = families_table(family_dag(cooccurrence, totals)[0])
    return sae, concept_paths, cooccurrence, totals, families, parents, residuals, terms, vectors


def test_hierarchy_names_children_better_than_the_decoder_alone(planted_run, tmp_path):
    sae, concept_paths, cooccurrence, totals, families, parents, residuals, terms, vectors = (
        planted_run
    )
    w_dec, b_dec = sae.W_dec.double().numpy(), sae.b_dec.double().numpy()
    expected = expected_names(w_dec, parents, residuals)
    frequency = totals["frequency"].to_numpy()
    index = build_index(vectors)
    scores = {}
    for method in ("decoder", "hierarchy", "release"):
        wanted = families if method == "hierarchy" else None
        weights = top_patch_weights(concept_paths, wanted) if method != "decoder" else None
        v = concept_vectors(w_dec, b_dec, method, weights, families, 1.33, cooccurrence, 0.75)
        names = names_table(v, index, terms, method, np.zeros(64), frequency)["name"].to_pylist()
        judged = [(n, e) for n, e, f in zip(names, expected, frequency, strict=True) if e and f]
        scores[method] = sum(n == e for n, e in judged) / len(judged)
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    print("planted naming scores:", json.dumps(scores))
    assert len(judged) >= PARENTS
    assert scores["hierarchy"] > scores["decoder"]
