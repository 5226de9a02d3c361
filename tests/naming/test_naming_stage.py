"""The naming stage's entry points: vocabulary embeddings through the cache, and names."""

import numpy as np
import pyarrow.parquet as pq
import torch

from insight.models.backbone import backbone_spec
from insight.models.prompts import naming_templates
from insight.naming.embed import embed_vocabulary


def test_embed_vocabulary_encodes_every_template_once(tiny_run):
    stats = tiny_run.reports["vocabulary"]
    by_pos = naming_templates(tiny_run.cfg.vocabulary.templates)
    templates = len({t for ts in by_pos.values() for t in ts})  # distinct prompts
    assert stats["prompts_encoded"] == stats["terms"] * templates
    table = pq.read_table(tiny_run.results / "vocabulary/embeddings.parquet")
    assert table.num_rows == stats["terms"] * len(by_pos)
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # a second run takes every prompt from the cache and gives the same table
    again, stats = embed_vocabulary(
        table["term"].to_pylist()[: stats["terms"]],
        backbone_spec(tiny_run.cfg.backbone),
        tiny_run.cfg.vocabulary,
        tiny_run.results / "vocabulary/cache",
        torch.device("cpu"),
    )
    assert stats["prompts_encoded"] == 0 and stats["cache_hits"] > 0
    assert np.allclose(np.stack(again["embedding"].to_numpy(zero_copy_only=False)), vectors)


def test_name_concepts_names_every_concept_from_the_vocabulary(tiny_run):
    names = pq.read_table(tiny_run.results / "naming/names.parquet")
    terms = set(
        pq.read_table(tiny_run.results / "vocabulary/embeddings.parquet")["term"].to_pylist()
    )
    assert names["concept"].to_pylist() == list(range(32))
    assert {n for n in names["name"].to_pylist() if n is not None} <= terms
    assert set(names["method"].to_pylist()) == {tiny_run.cfg.naming.method}
