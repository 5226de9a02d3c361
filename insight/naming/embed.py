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
from insight.models.prompts import naming_templates, template_embeddings
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
    """Eq. B.11 for every term (per part of speech, templates from ``settings.templates``),
    through the prompt cache."""
    templates = naming_templates(settings.templates)
    per_term = len({t for pos_templates in templates.values() for t in pos_templates})
    model, _, tokenizer = load_clip(spec, device)
    encoder = cached_text_encoder(
        model, tokenizer, spec, cache_dir, device, settings.precision, settings.batch_size
    )
    cache = encoder.cache
    bar = progress(None, "encode prompts", "prompt")
    by_pos = template_embeddings(
        terms, lambda prompts: encoder.encode(prompts, bar.update), templates
    )
    bar.close()
    stats = {
        "terms": len(terms),
        "prompts_encoded": encoder.encoded,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    log.info(
        "encoded %d prompts (%d new terms x %d distinct templates); %d lookups from the cache",
        encoder.encoded,
        encoder.encoded // per_term,
        per_term,
        cache.hits,
    )
    return embedding_table(terms, by_pos), stats
