"""Embedding the vocabulary with the frozen CLIP text tower through the prompt cache (Eq. B.11)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import torch

from insight.core.logs import progress
from insight.core.sections import VocabularySettings
from insight.models.backbone import (
    BackboneSpec,
    load_clip,
)
from insight.models.prompts import TEMPLATES, template_embeddings
from insight.models.text import cached_text_encoder
from insight.naming.vocabulary import embedding_table

log = logging.getLogger(__name__)


def embed_vocabulary(
    terms: list[str],
    spec: BackboneSpec,
    settings: VocabularySettings,
    cache_dir: str | Path,
    device: torch.device,
) -> tuple[pa.Table, dict]:
    """Eq. B.11 for every term (per part of speech), through the prompt cache."""
    model, _, tokenizer = load_clip(spec, device)
    encoder = cached_text_encoder(
        model, tokenizer, spec, cache_dir, device, settings.precision, settings.batch_size
    )
    cache = encoder.cache
    bar = progress(None, "encode prompts", "prompt")
    by_pos = template_embeddings(terms, lambda prompts: encoder.encode(prompts, bar.update))
    bar.close()
    stats = {
        "terms": len(terms),
        "prompts_encoded": encoder.encoded,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    log.info(
        "encoded %d prompts (%d new terms x %d templates); %d prompts from the cache",
        encoder.encoded,
        encoder.encoded // sum(len(t) for t in TEMPLATES.values()),
        sum(len(t) for t in TEMPLATES.values()),
        cache.hits,
    )
    return embedding_table(terms, by_pos), stats
