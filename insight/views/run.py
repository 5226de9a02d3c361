"""Loading a finished run (models, SAE, names, families) for the ``insight`` commands."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import require_run_files
from insight.core.layout import RunLayout
from insight.core.sections import Settings
from insight.models.backbone import BackboneSpec
from insight.models.frozen import FrozenModels, load_frozen, model_bundle
from insight.sae.model import MatryoshkaBatchTopKSAE, load_sae


@dataclasses.dataclass
class TrainedRun:
    """What the ``insight`` commands load of a finished run: the frozen models, the SAE,
    the names table and the families table (None before the hierarchy exists)."""

    results: Path
    layout: RunLayout
    spec: BackboneSpec
    device: torch.device
    models: FrozenModels
    sae: MatryoshkaBatchTopKSAE
    names: pa.Table
    families: pa.Table | None


def run_dinoiser(settings: Settings, layout: RunLayout) -> Path | None:
    """The DINOiser head a run's models read: the released checkpoint when one is
    configured, else the one the run trained; None when the DINOiser is disabled."""
    if not settings.dinoiser.enabled:
        return None
    return Path(settings.dinoiser.checkpoint or layout.dinoiser_weights)


def load_trained_run(
    settings: Settings, results: str | Path, command: str, extra: Sequence[str] = ()
) -> TrainedRun:
    """Load a run's backbone, DINOiser, SAE, names and families; a missing file (these, or
    the :class:`RunLayout` files named in ``extra``) raises :class:`RunNotFoundError` naming the file and
    the snakemake command that makes it."""
    from insight.core.runtime import resolve_device

    layout = RunLayout(str(results))
    needed = {
        "sae": Path(layout.sae_weights),
        "names": Path(layout.names),
        **{name: Path(getattr(layout, name)) for name in extra},
    }
    dinoiser = run_dinoiser(settings, layout)
    if dinoiser is not None:
        needed["dinoiser"] = dinoiser
    require_run_files(needed, command)
    frozen = model_bundle(settings, needed.get("dinoiser"))
    device = resolve_device(settings.device)
    families = Path(layout.families)
    return TrainedRun(
        results=Path(results),
        layout=layout,
        spec=frozen.backbone,
        device=device,
        models=load_frozen(frozen, device),
        sae=load_sae(needed["sae"]).to(device),
        names=pq.read_table(needed["names"], columns=["concept", "name"]),
        families=pq.read_table(families) if families.exists() else None,
    )
