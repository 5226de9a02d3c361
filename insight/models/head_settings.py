"""Settings of the DINOiser head that the workflow checks while parsing (no torch import)."""

from __future__ import annotations

from pathlib import Path

CLIP_DINOISER_URL = "https://github.com/wysoczanska/clip_dinoiser"


def published_head_missing(path: str | Path) -> str:
    """The one-line message for a configured published head that is not on disk."""
    return (
        f"dinoiser.checkpoint {path} does not exist: download CLIP-DINOiser's "
        f"checkpoints/last.pt ({CLIP_DINOISER_URL}) to that path, or set "
        "dinoiser.checkpoint: null to train the head here"
    )


def check_dinoiser_settings(cfg: dict) -> None:
    """A released checkpoint is a ``published`` head: any other pairing is a config error."""
    if cfg.get("checkpoint") and cfg.get("head", "published") != "published":
        raise ValueError(
            f"dinoiser.checkpoint {cfg['checkpoint']} is CLIP-DINOiser's published head: "
            "set dinoiser.head: published, or dinoiser.checkpoint: null to train the paper's head"
        )
