"""Concept naming (Sec. 3.4, App. B.4).

- ``decoder`` (Eq. 6, the baseline): ``v_i = W_dec[i] + b_dec``. (Eq. 6 prints argmin;
  the text says maximum cosine similarity, which is what is meant and what we do.)
- ``hierarchy`` (Eq. B.9): ``v_i = b_dec + alpha * w_ii * W_dec[i] + sum_{a parent of i}
  D[i, a] * w_ia * W_dec[a]`` with alpha = 1.33 and ``w_ia`` the mean activation of
  concept a over the top-30 patches of concept i (patches where a is silent count as
  0). "Parent" is a *direct* parent in the family DAG, as Eq. B.9 writes it.
- ``release`` (the authors' released naming vector): the family of i is i itself and
  every j with ``D[i, j] > threshold`` straight from D (not the cycle-free DAG), weighted
  ``W[i, j] = D[i, j]`` (``W[i, i] = 1``); ``t[i, a]`` = the mean activation of a over
  i's top-30 patches for every concept a; ``w_i = W[i] * t[i]`` rescaled to the norm
  ``alpha * mean_i ||t[i]||`` (the mean over concepts that fired); ``v_i = w_i W_dec + b_dec``.
  Unlike B.9 as printed, the weights are renormalised to a common norm and alpha scales
  the whole vector, not only the concept's own term.
- The name is ``argmax_v max_p cos(v_i, E_p(v))`` over the vocabulary (Eq. B.12-B.13),
  looked up in a FAISS inner-product index of the unit template embeddings.
- A concept that never fired has no top patches; it is not named (``name`` null).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from insight.core.sections import NamingSettings
from insight.naming.vocabulary import load_index
from insight.sae.model import load_sae

NAME_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("name", pa.string()),
        ("score", pa.float32()),
        ("method", pa.string()),
        ("runner_up", pa.list_(pa.string())),
        ("runner_up_scores", pa.list_(pa.float32())),
        ("group", pa.int32()),
        ("frequency", pa.int64()),
    ]
)


NAMING_METHODS = ("hierarchy", "decoder", "release", "imported")


PATCH_DIVISORS = ("top", "active")


def top_patch_weights(
    concept_paths: Sequence[str | Path],
    families: pa.Table | None,
    top: int = 30,
    divide_by: str = "top",
) -> pa.Table:
    """``w_ia`` for every concept i and every a in {i} and the parents of i (every a that
    fires in those patches when ``families`` is None): the mean activation of a over the
    ``top`` most activating patches of i (DuckDB). A concept that fires on fewer than
    ``top`` patches: ``divide_by="top"`` divides by ``top`` all the same (the release's
    top-30 includes zeros), ``"active"`` by the patches it fires on.

    Two passes over the shards, one shard at a time, so memory holds one shard and m x top
    patches, never every row: the first keeps each concept's running top patches (the top
    of the union of per-shard tops is the global top, ties broken by image and patch); the
    second sums the activations found in those patches."""
    if divide_by not in PATCH_DIVISORS:
        raise ValueError(f"naming.patch_divisor must be one of {PATCH_DIVISORS}, not {divide_by!r}")
    import duckdb

    con = duckdb.connect()
    ranked = "qualify row_number() over (partition by concept order by activation desc, image_id, patch) <= $top"
    best = None
    for path in concept_paths:
        shard = con.sql(
            f"select concept, image_id, patch, activation from read_parquet($file) {ranked}",
            params={"file": str(path), "top": top},
        ).to_arrow_table()
        if best is not None:
            con.register("best", best)
            con.register("shard", shard)
            shard = con.sql(
                f"select * from (select * from best union all select * from shard) {ranked}",
                params={"top": top},
            ).to_arrow_table()
        best = shard
    if best is None:
        raise ValueError("top_patch_weights needs at least one concept shard")
    con.register("top_patches", best.select(["concept", "image_id", "patch"]))
    wanted, join_wanted = "", ""  # every a that fires in i's top patches
    if families is not None:  # only i itself and its parents
        con.register("families", families)
        wanted = """
        , wanted as (
            select child as concept, parent as other from families
            union select distinct concept, concept from top_patches
        )"""
        join_wanted = "join wanted w on w.concept = t.concept and w.other = a.concept"
    sums = [
        con.sql(
            f"""
            with t as (select * from top_patches){wanted}
            select t.concept, a.concept as other, sum(a.activation::double) as total
            from t join read_parquet($file) a using (image_id, patch)
            {join_wanted}
            group by t.concept, a.concept
            """,
            params={"file": str(path)},
        ).to_arrow_table()
        for path in concept_paths
    ]
    con.register("sums", pa.concat_tables(sums))
    divisor = "$top" if divide_by == "top" else "any_value(c.n)"
    return con.sql(
        f"""
        with counts as (select concept, count(*) as n from top_patches group by concept)
        select s.concept, s.other, sum(s.total) / {divisor} as weight
        from sums s join counts c on c.concept = s.concept
        group by s.concept, s.other
        order by s.concept, s.other
        """,
        params={"top": top} if divide_by == "top" else {},
    ).to_arrow_table()


def release_concept_vectors(
    w_dec: np.ndarray,
    b_dec: np.ndarray,
    weights: pa.Table,
    cooccurrence: pa.Table,
    threshold: float = 0.75,
    alpha: float = 1.33,
) -> np.ndarray:
    """The release's naming vectors (module docstring): ``weights`` holds ``t[i, a]`` for
    every pair (:func:`top_patch_weights` without families), ``cooccurrence`` the entries
    ``D[i, j]`` of ``cooccurrence.parquet``."""
    from scipy import sparse

    m = w_dec.shape[0]

    def matrix(table: pa.Table, value: str) -> sparse.csr_matrix:
        rows, cols = table["concept"].to_numpy(), table["other"].to_numpy()
        return sparse.csr_matrix((table[value].to_numpy().astype(np.float64), (rows, cols)), (m, m))

    t = matrix(weights, "weight")
    family = matrix(
        cooccurrence.filter(pc.greater(cooccurrence["confidence"], threshold)), "confidence"
    )
    family = family - sparse.diags(family.diagonal()) + sparse.identity(m, format="csr")
    norms = np.sqrt(np.asarray(t.multiply(t).sum(axis=1)).ravel())
    target = alpha * norms.mean()  # over all m concepts, as released (dead ones count 0)
    w = sparse.csr_matrix(family.multiply(t))
    w_norms = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel())
    scale = np.divide(target, w_norms, out=np.zeros(m), where=w_norms > 0)
    return np.asarray(sparse.diags(scale) @ w @ w_dec) + b_dec


def concept_vectors(
    w_dec: np.ndarray,
    b_dec: np.ndarray,
    method: str = "hierarchy",
    weights: pa.Table | None = None,
    families: pa.Table | None = None,
    alpha: float = 1.33,
    cooccurrence: pa.Table | None = None,
    threshold: float = 0.75,
) -> np.ndarray:
    """Concept vectors (m, d) to name: Eq. 6 (``decoder``), Eq. B.9 (``hierarchy``) or the
    release's vector (``release``, :func:`release_concept_vectors`)."""
    if method not in NAMING_METHODS:
        raise ValueError(f"naming.method must be one of {NAMING_METHODS}, got {method!r}")
    if method == "decoder":
        return w_dec + b_dec
    if method == "release":
        if weights is None or cooccurrence is None:
            raise ValueError("release naming needs the top-patch weights and the co-occurrence D")
        return release_concept_vectors(w_dec, b_dec, weights, cooccurrence, threshold, alpha)
    if weights is None or families is None:
        raise ValueError("hierarchy naming needs the top-patch weights and the family DAG")
    m = w_dec.shape[0]
    w = {
        (c, o): v
        for c, o, v in zip(
            *(weights[k].to_pylist() for k in ("concept", "other", "weight")), strict=True
        )
    }
    own = np.array([w.get((i, i), 0.0) for i in range(m)])
    vectors = b_dec + alpha * own[:, None] * w_dec
    for parent, child, confidence in zip(
        *(families[k].to_pylist() for k in ("parent", "child", "confidence")), strict=True
    ):
        vectors[child] += confidence * w.get((child, parent), 0.0) * w_dec[parent]
    return vectors


def name_vectors(
    vectors: np.ndarray, index, terms: Sequence[str], runner_up: int = 5, rows_per_term: int = 3
) -> tuple[list[str], np.ndarray, list[list[str]], list[list[float]]]:
    """For each vector: the best term by max-over-rows cosine (Eq. B.12-B.13), its score and
    the ``runner_up`` next distinct terms. ``terms[r]`` is the term of index row r."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    k = min(index.ntotal, (runner_up + 1) * rows_per_term + 8)
    scores, rows = index.search(np.ascontiguousarray(unit, dtype=np.float32), k)
    names, best, others, other_scores = [], np.zeros(len(vectors), dtype=np.float32), [], []
    for i in range(len(vectors)):
        ranked: dict[str, float] = {}
        for score, row in zip(scores[i], rows[i], strict=True):
            if row >= 0 and terms[row] not in ranked:
                ranked[terms[row]] = float(score)
        ordered = list(ranked.items())
        names.append(ordered[0][0])
        best[i] = ordered[0][1]
        others.append([t for t, _ in ordered[1 : runner_up + 1]])
        other_scores.append([s for _, s in ordered[1 : runner_up + 1]])
    return names, best, others, other_scores


def concept_names(names: pa.Table | str | Path | None) -> dict[int, str | None]:
    """``concept -> name`` from ``names.parquet`` (a path or its table); empty for None."""
    if names is None:
        return {}
    if not isinstance(names, pa.Table):
        import pyarrow.parquet as pq

        names = pq.read_table(names, columns=["concept", "name"])
    return dict(zip(names["concept"].to_pylist(), names["name"].to_pylist(), strict=True))


def names_table(
    vectors: np.ndarray,
    index,
    terms: Sequence[str],
    method: str,
    groups: np.ndarray,
    frequency: np.ndarray,
    runner_up: int = 5,
) -> pa.Table:
    """``names.parquet``: every concept with its name (null if it never fired), score,
    method, runner-up names, Matryoshka group and frequency (patches where it fired)."""
    names, scores, others, other_scores = name_vectors(vectors, index, terms, runner_up)
    silent = frequency == 0
    return pa.table(
        {
            "concept": np.arange(len(vectors), dtype=np.int32),
            "name": [None if s else n for n, s in zip(names, silent, strict=True)],
            "score": np.where(silent, np.nan, scores).astype(np.float32),
            "method": [method] * len(vectors),
            "runner_up": [[] if s else o for o, s in zip(others, silent, strict=True)],
            "runner_up_scores": [[] if s else o for o, s in zip(other_scores, silent, strict=True)],
            "group": groups.astype(np.int32),
            "frequency": frequency.astype(np.int64),
        },
        schema=NAME_SCHEMA,
    )


PARENT_READINGS = ("all", "direct")


def naming_parents(families: pa.Table, parents: str) -> pa.Table:
    """The family edges Eq. B.9 reads: ``all`` of them, or only the ``direct`` ones."""
    if parents not in PARENT_READINGS:
        raise ValueError(f"naming.parents must be one of {PARENT_READINGS}, got {parents!r}")
    return families if parents == "all" else families.filter(families["direct"])


def name_concepts(
    sae_path: str | Path,
    families_path: str | Path,
    totals_path: str | Path,
    concept_paths: Sequence[str | Path],
    embeddings_path: str | Path,
    index_path: str | Path,
    settings: NamingSettings,
    cooccurrence_path: str | Path | None = None,
    threshold: float = 0.75,
    imported_names_path: str | Path | None = None,
) -> pa.Table:
    """Sec. 3.4: concept vectors (Eq. 6, B.9 or the release's) named against the vocabulary
    (B.12-B.13); ``threshold`` is the family threshold on D (``hierarchy.threshold``).
    ``imported`` takes the names shipped with an imported SAE instead (no scores)."""
    sae = load_sae(sae_path)
    groups = sae.group_of(torch.arange(sae.config.d_sae)).numpy()
    frequency = pq.read_table(totals_path)["frequency"].to_numpy()
    if settings.method == "imported":
        from insight.sae.interop import read_concept_names

        if imported_names_path is None:
            raise ValueError("naming.method: imported needs the SAE folder's concept_names.txt")
        names = read_concept_names(Path(imported_names_path).parent, sae.config.d_sae)
        return imported_names_table(names or [], groups, frequency)
    w_dec, b_dec = sae.W_dec.double().numpy(), sae.b_dec.double().numpy()
    families = naming_parents(pq.read_table(families_path), settings.parents)
    method = settings.method
    weights = None
    if method in ("hierarchy", "release"):
        wanted = families if method == "hierarchy" else None
        weights = top_patch_weights(
            concept_paths, wanted, settings.top_patches, settings.patch_divisor
        )
    cooccurrence = pq.read_table(cooccurrence_path) if method == "release" else None
    vectors = concept_vectors(
        w_dec, b_dec, method, weights, families, settings.alpha, cooccurrence, threshold
    )
    terms = pq.read_table(embeddings_path, columns=["term"])["term"].to_pylist()
    return names_table(
        vectors,
        load_index(index_path),
        terms,
        settings.method,
        groups,
        frequency,
        settings.runner_up,
    )


def imported_names_table(
    names: Sequence[str], groups: np.ndarray, frequency: np.ndarray
) -> pa.Table:
    """``names.parquet`` from shipped names (method ``imported``; no score or runner-ups;
    concepts that never fired here have a null name, as for computed names)."""
    if len(names) != len(groups):
        raise ValueError(f"{len(names)} imported names for {len(groups)} concepts")
    silent = frequency == 0
    return pa.table(
        {
            "concept": np.arange(len(names), dtype=np.int32),
            "name": [None if s or not n else n for n, s in zip(names, silent, strict=True)],
            "score": np.full(len(names), np.nan, dtype=np.float32),
            "method": ["imported"] * len(names),
            "runner_up": [[] for _ in names],
            "runner_up_scores": [[] for _ in names],
            "group": groups.astype(np.int32),
            "frequency": frequency.astype(np.int64),
        },
        schema=NAME_SCHEMA,
    )
