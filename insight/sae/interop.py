"""The SAE in the field's file layouts: dictionary_learning (the authors' release) and SAELens.

- ``dictionary_learning`` (``MatryoshkaBatchTopKSAE``, the layout of the released CFM SAE):
  a folder with ``ae.pt``, a plain state dict with ``W_enc`` (d, m), ``b_enc`` (m),
  ``W_dec`` (m, d), ``b_dec`` (d), ``threshold`` (one global scalar), ``k`` (int) and
  ``group_sizes`` (ints summing to m); ``config.json`` (``{"trainer": {...}}``, as
  ``dictionary_learning.training.trainSAE`` writes it); optionally ``concept_names.txt``,
  one name per line in concept order. Its ``encode`` is ``relu((x - b_dec) W_enc + b_enc)``
  kept where greater than the threshold: the same function as
  :meth:`MatryoshkaBatchTopKSAE.encode`, so an imported SAE gives the release's codes.
- ``saelens``: ``cfg.json`` + ``sae_weights.safetensors`` of a JumpReLU SAE (the form
  SAELens gives a trained BatchTopK SAE for inference): ``W_enc``, ``b_enc``, ``W_dec``,
  ``b_dec`` and a per-latent ``threshold`` (the global one, repeated), with
  ``apply_b_dec_to_input``; JumpReLU's ``relu(pre) * (pre > threshold)`` is again our
  ``encode``.

Files are read with ``torch.load(weights_only=True)`` (no pickled code runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from insight.core.io import atomic_dir, require_new_folder, require_run_files, save_safetensors
from insight.core.layout import RunLayout
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig

DICTIONARY_LEARNING_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "k", "group_sizes")
NAMES_FILE = "concept_names.txt"
EXPORT_FORMATS = ("dictionary_learning", "saelens")


def read_dictionary_learning(folder: str | Path) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """The SAE of a dictionary_learning folder and its ``config.json`` (``{}`` if absent)."""
    folder = Path(folder)
    if not (folder / "ae.pt").is_file():
        raise FileNotFoundError(
            f"{folder}: no ae.pt (expected a dictionary_learning folder: ae.pt, config.json, "
            f"optionally {NAMES_FILE})"
        )
    state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    missing = [key for key in DICTIONARY_LEARNING_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"{folder / 'ae.pt'}: not a MatryoshkaBatchTopKSAE state dict (missing {', '.join(missing)})"
        )
    d_in, d_sae = state["W_enc"].shape
    settings = (
        json.loads((folder / "config.json").read_text())
        if (folder / "config.json").is_file()
        else {}
    )
    trainer = settings.get("trainer", {})
    config = SAEConfig(
        d_in=int(d_in),
        d_sae=int(d_sae),
        k=int(state["k"]),
        group_sizes=tuple(int(s) for s in state["group_sizes"].tolist()),
        aux_coefficient=float(trainer.get("auxk_alpha", 1 / 32)),
    )
    sae = MatryoshkaBatchTopKSAE(config)
    with torch.no_grad():
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, key).copy_(state[key].float())
        sae.set_threshold(state["threshold"].float().reshape(()))
    return sae.eval().requires_grad_(False), settings


def read_concept_names(folder: str | Path, d_sae: int) -> list[str] | None:
    """``concept_names.txt`` of an SAE folder (one name per concept), or None."""
    path = Path(folder) / NAMES_FILE
    if not path.is_file():
        return None
    names = path.read_text(encoding="utf-8").splitlines()
    if len(names) != d_sae:
        raise ValueError(f"{path}: {len(names)} names for {d_sae} concepts")
    return [name.strip() for name in names]


def dictionary_learning_state(sae: MatryoshkaBatchTopKSAE) -> dict[str, torch.Tensor]:
    """``ae.pt``'s state dict for ``sae`` (the tensors dictionary_learning registers)."""
    if sae.threshold.numel() != 1:
        raise ValueError(
            "dictionary_learning holds one global threshold and this SAE has one per concept "
            "(sae.inference_threshold: per_concept): export it as saelens"
        )
    return {
        "W_enc": sae.W_enc.detach().cpu().clone(),
        "b_enc": sae.b_enc.detach().cpu().clone(),
        "W_dec": sae.W_dec.detach().cpu().clone(),
        "b_dec": sae.b_dec.detach().cpu().clone(),
        "k": torch.tensor(sae.config.k, dtype=torch.int),
        "threshold": sae.threshold.detach().cpu().float().clone(),
        "group_sizes": torch.tensor(sae.config.group_sizes),
    }


def write_dictionary_learning(
    sae: MatryoshkaBatchTopKSAE,
    folder: str | Path,
    names: list[str | None] | None = None,
    trainer: dict | None = None,
) -> None:
    """``folder`` as dictionary_learning writes a trainer's folder (atomically)."""
    config = sae.config
    fractions = [size / config.d_sae for size in config.group_sizes]
    with atomic_dir(folder) as tmp:
        torch.save(dictionary_learning_state(sae), tmp / "ae.pt")
        settings = {
            "trainer": {
                "trainer_class": "MatryoshkaBatchTopKTrainer",
                "dict_class": "MatryoshkaBatchTopKSAE",
                "activation_dim": config.d_in,
                "dict_size": config.d_sae,
                "k": config.k,
                "group_fractions": fractions,
                "group_sizes": list(config.group_sizes),
                "auxk_alpha": config.aux_coefficient,
                **(trainer or {}),
            }
        }
        (tmp / "config.json").write_text(json.dumps(settings, indent=4))
        if names is not None:
            lines = [(name or "").replace("\n", " ") for name in names]
            (tmp / NAMES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_saelens(
    sae: MatryoshkaBatchTopKSAE, folder: str | Path, metadata: dict | None = None
) -> None:
    """``folder`` in SAELens' layout: ``cfg.json`` + ``sae_weights.safetensors`` (JumpReLU)."""
    config = sae.config
    with atomic_dir(folder) as tmp:
        save_safetensors(
            {
                "W_enc": sae.W_enc.detach(),
                "b_enc": sae.b_enc.detach(),
                "W_dec": sae.W_dec.detach(),
                "b_dec": sae.b_dec.detach(),
                "threshold": sae.threshold.detach().clamp(min=0).expand(config.d_sae).contiguous(),
            },
            tmp / "sae_weights.safetensors",
        )
        cfg = {
            "architecture": "jumprelu",
            "d_in": config.d_in,
            "d_sae": config.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "metadata": {
                "sae_type": "matryoshka_batchtopk",
                "k": config.k,
                "group_sizes": list(config.group_sizes),
                **(metadata or {}),
            },
        }
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2))


def export_sae(
    sae: MatryoshkaBatchTopKSAE,
    folder: str | Path,
    fmt: str,
    names: list[str | None] | None = None,
    metadata: dict | None = None,
) -> None:
    """Write ``sae`` in ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    if fmt == "dictionary_learning":
        write_dictionary_learning(sae, folder, names, metadata)
    elif fmt == "saelens":
        write_saelens(sae, folder, metadata)
    else:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, not {fmt!r}")


def export_run_sae(results: str | Path, out: str | Path, fmt: str) -> Path:
    """A run's SAE (``results/models/sae.safetensors``, with ``results/naming/names.parquet``
    when it exists) written to the new folder ``out`` in ``fmt``."""
    import pyarrow.parquet as pq

    from insight.sae.model import load_sae

    layout = RunLayout(str(results))
    weights = Path(layout.sae_weights)
    require_run_files({"sae": weights}, "export-sae")
    out = require_new_folder(out)
    sae = load_sae(weights)
    names_path = Path(layout.names)
    names = None
    if names_path.is_file():
        table = pq.read_table(names_path, columns=["concept", "name"]).to_pydict()
        by_concept = dict(zip(table["concept"], table["name"], strict=True))
        names = [by_concept.get(i) for i in range(sae.config.d_sae)]
    export_sae(sae, out, fmt, names if fmt == "dictionary_learning" else None)
    return out
