"""Where a run keeps the files more than one stage reads: the rules, the ``insight``
commands (explain, caption, export) and the export all name them through
:class:`RunLayout`, so a path is spelt once. Outputs only one rule writes and the next
reads stay spelt in that rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RunLayout:
    """The shared files of a run under ``root`` (``results`` in the workflow's folder),
    as strings, the form Snakemake's rules take."""

    root: str = "results"

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    @property
    def dinoiser_weights(self) -> str:
        return self.path("models/dinoiser.safetensors")

    @property
    def sae_weights(self) -> str:
        return self.path("models/sae.safetensors")

    @property
    def sae_report(self) -> str:
        return self.path("models/sae.json")

    @property
    def sae_checkpoints(self) -> str:
        return self.path("models/checkpoints")

    @property
    def captioner(self) -> str:
        return self.path("models/captioner/insight")

    @property
    def cooccurrence(self) -> str:
        return self.path("hierarchy/cooccurrence.parquet")

    @property
    def totals(self) -> str:
        return self.path("hierarchy/totals.parquet")

    @property
    def families(self) -> str:
        return self.path("hierarchy/families.parquet")

    @property
    def family_quality(self) -> str:
        return self.path("hierarchy/family_quality.json")

    @property
    def terms(self) -> str:
        return self.path("vocabulary/terms.parquet")

    @property
    def embeddings(self) -> str:
        return self.path("vocabulary/embeddings.parquet")

    @property
    def vocabulary_index(self) -> str:
        return self.path("vocabulary/index.faiss")

    @property
    def text_cache(self) -> str:
        """Text embeddings cached by (backbone, prompt): vocabulary, OVS and probes share it."""
        return self.path("vocabulary/cache")

    @property
    def thumbnail_cache(self) -> str:
        return self.path("cache/thumbnails")

    @property
    def names(self) -> str:
        return self.path("naming/names.parquet")

    @property
    def world_recovery(self) -> str:
        """What the demo's concepts recovered of its generated world."""
        return self.path("demo/world_recovery.json")


RUN = RunLayout()
"""The workflow's own run (``results/`` in the working directory)."""
