"""The browser from a run's files: names, families, concept shards and image index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from insight.core.sections import BrowserSettings
from insight.data.batches import BatchTransform
from insight.data.images import ImageRef
from insight.models.backbone import BackboneSpec, load_clip
from insight.views.browser.examples import top_activations
from insight.views.browser.pages import write_browser
from insight.views.browser.queries import activation_histograms, concept_infos, image_activations
from insight.views.browser.thumbnails import render_pictures, render_thumbnails


def build_browser(
    names_path: str | Path,
    families_path: str | Path | None,
    concept_files: Sequence[str | Path],
    index_path: str | Path | None,
    spec: BackboneSpec,
    settings: BrowserSettings,
    cache: str | Path,
    out: str | Path,
    totals_path: str | Path | None = None,
    dense_coverage: float = 0.5,
) -> dict:
    """The concept browser (:func:`write_browser`) from the names, the families, the
    per-concept totals (coverage, the ``dense`` badge at ``dense_coverage``), the concept
    shards of one dataset and, when it has images, their index (for the thumbnails and the
    image pages)."""
    from insight.features.shards import shard_grid

    names = pq.read_table(names_path)
    families = pq.read_table(families_path) if families_path else None
    totals = pq.read_table(totals_path) if totals_path else None
    infos = concept_infos(names, families, totals, dense_coverage)
    examples = top_activations(
        concept_files, settings.images_per_concept, settings.images_per_band, settings.band_sample
    )
    histograms = activation_histograms(concept_files)
    thumbnails, pictures, activations, grid = {}, {}, None, None
    if index_path and concept_files:
        index = pq.read_table(index_path).to_pylist()
        refs = {r["image_id"]: ImageRef(r["image_id"], r["path"], r["member"]) for r in index}
        _, preprocess, _ = load_clip(spec)
        transform = BatchTransform(preprocess)
        grid = shard_grid(concept_files[0])
        thumbnails = render_thumbnails(
            examples, refs, transform.pil, grid, cache, settings.thumbnail_size
        )
        shown = list(dict.fromkeys(examples["image_id"].to_pylist()))[: settings.image_pages]
        pictures = render_pictures(shown, refs, transform.pil, Path(cache) / "pictures")
        activations = image_activations(concept_files, list(pictures))
    write_browser(
        infos, examples, thumbnails, families, out, histograms, pictures, activations, grid
    )
    return {
        "concepts": len(infos),
        "images": examples.num_rows,
        "thumbnails": len(thumbnails),
        "image_pages": len(pictures),
    }
