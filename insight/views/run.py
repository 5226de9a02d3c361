"""Loading a finished run (models, SAE, names, families) for the ``insight`` commands."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from insight.core.io import require_run_files
from insight.models.backbone import (
    BackboneSpec,
    backbone_spec,
)
from insight.models.frozen import FrozenModels, FrozenSpec, load_frozen
from insight.sae.model import MatryoshkaBatchTopKSAE, load_sae


@dataclasses.dataclass
class TrainedRun:
    """What the ``insight`` commands load of a finished run: the frozen models, the SAE,
    the names table and the families table (None before the hierarchy exists)."""

    results: Path
    spec: BackboneSpec
    device: torch.device
    models: FrozenModels
    sae: MatryoshkaBatchTopKSAE
    names: pa.Table
    families: pa.Table | None


def load_trained_run(
    cfg: dict, results: str | Path, command: str, extra: Sequence[str] = ()
) -> TrainedRun:
    """Load a run's backbone, DINOiser, SAE, names and families; a missing file (these, or
    ``extra`` paths under ``results``) raises :class:`RunNotFoundError` naming the file and
    the snakemake command that makes it."""
    from insight.core.runtime import resolve_device

    results = Path(results)
    needed = {
        "sae": results / "models/sae.safetensors",
        "names": results / "naming/names.parquet",
        **{path: results / path for path in extra},
    }
    if cfg["dinoiser"]["enabled"]:  # the released head when configured, else the trained one
        released = cfg["dinoiser"].get("checkpoint")
        needed["dinoiser"] = Path(released) if released else results / "models/dinoiser.safetensors"
    require_run_files(needed, command)
    spec, device = backbone_spec(cfg["backbone"]), resolve_device(cfg["device"])
    families = results / "hierarchy/families.parquet"
    return TrainedRun(
        results=results,
        spec=spec,
        device=device,
        models=load_frozen(
            FrozenSpec(spec, needed.get("dinoiser"), cfg["dinoiser"]["gamma"]), device
        ),
        sae=load_sae(needed["sae"]).to(device),
        names=pq.read_table(needed["names"], columns=["concept", "name"]),
        families=pq.read_table(families) if families.exists() else None,
    )
