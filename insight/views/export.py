"""A trained run as a folder to share on the Hugging Face Hub, and its loader.

``insight export OUT`` writes, from a finished run:

- ``sae.safetensors``: the SAE's tensors with its config in the metadata (the project's
  own format, :func:`insight.sae.model.load_sae` reads it), and ``config.json``: the SAE
  config, the backbone, the DINOiser head, the dataset and the held-out metrics;
- ``names.parquet``, ``families.parquet``, ``cooccurrence.parquet``: the concepts' names,
  the family DAG and the co-occurrence matrix D, as the workflow wrote them;
- ``README.md``: a model card with YAML metadata (library, tags, the base CLIP, the
  training data) and the SAE's core metrics in SAEBench's terms, read from ``sae.json``.

Upload it with ``huggingface-cli upload USER/NAME OUT``. :func:`load_export` reads such a
folder back from a local path or, online, from a Hub repository id.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from insight.core.io import atomic_dir, require_new_folder, require_run_files
from insight.core.layout import RunLayout
from insight.core.sections import Settings
from insight.sae.model import MatryoshkaBatchTopKSAE, load_sae

EXPORTED_TABLES = {  # file name in the export -> the run's file (RunLayout)
    "names.parquet": "names",
    "families.parquet": "families",
    "cooccurrence.parquet": "cooccurrence",
}
SAEBENCH_ROWS = (
    ("explained_variance", "explained variance"),
    ("mse", "MSE (per patch)"),
    ("cossim", "cosine similarity"),
    ("l0", "L0 (concepts per patch)"),
    ("frac_alive", "alive fraction"),
    ("l2_ratio", "shrinkage (L2 ratio)"),
)
# open_clip tags with a Hugging Face home, for the model card's base_model
BASE_MODELS = {
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    ("ViT-B-16", "openai"): "openai/clip-vit-base-patch16",
}


@dataclass
class ExportedRun:
    """What :func:`load_export` returns."""

    sae: MatryoshkaBatchTopKSAE
    names: pa.Table
    families: pa.Table
    cooccurrence: pa.Table
    config: dict


def model_card(config: dict, metrics: dict) -> str:
    """README.md for the Hub: YAML metadata, what the SAE is, its SAEBench core metrics."""
    backbone = config["backbone"]
    base = BASE_MODELS.get((backbone["model"], backbone.get("pretrained")))
    sae = config["sae"]
    header = [
        "---",
        "library_name: insight",
        "tags: [sparse-autoencoder, interpretability, clip, insight, matryoshka-batchtopk]",
        "license: mit",
        *([f"base_model: {base}"] if base else []),
        f"datasets: [{config['dataset']}]",
        "---",
    ]
    rows = [f"| {label} | {metrics[key]:.4f} |" for key, label in SAEBENCH_ROWS]
    body = [
        f"# INSIGHT concepts of {backbone['model']} ({backbone.get('pretrained') or 'local weights'})",
        "",
        f"A Matryoshka BatchTopK sparse autoencoder with {sae['d_sae']} concepts (k = {sae['k']},",
        f"groups {sae['group_sizes']}) on DINOised MaskCLIP patch features of {backbone['model']},",
        f"DINOiser head `{config['dinoiser']}`, trained on `{config['dataset']}`, with the",
        "concepts' names, families and co-occurrence matrix (INSIGHT / CFM, arXiv:2601.13798).",
        "",
        "## Core metrics (held-out patches, SAEBench's terms)",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
        "## Use",
        "",
        "```python",
        "from insight.views.export import load_export",
        "run = load_export('USER/NAME')  # or a local folder",
        "codes = run.sae.encode(patch_features)",
        "```",
        "",
        "Files: `sae.safetensors` (W_enc, b_enc, W_dec, b_dec, threshold; config in the",
        "metadata), `config.json`, `names.parquet`, `families.parquet`, `cooccurrence.parquet`.",
    ]
    return "\n".join(header + body) + "\n"


def export_run(results: str | Path, out: str | Path, settings: Settings) -> Path:
    """Write the shareable folder of a finished run (module docstring) to the new ``out``."""
    layout, out = RunLayout(str(results)), Path(out)
    needed = {
        "sae.safetensors": Path(layout.sae_weights),
        "sae.json": Path(layout.sae_report),
        **{name: Path(getattr(layout, key)) for name, key in EXPORTED_TABLES.items()},
    }
    require_run_files(needed, "export")
    require_new_folder(out)
    report = json.loads(needed["sae.json"].read_text())
    metrics = report["metrics"]["heldout"]
    dinoiser = settings.dinoiser
    config = {
        "sae": report["config"],
        "backbone": {"model": settings.backbone.model, "pretrained": settings.backbone.pretrained},
        "dinoiser": (dinoiser.head if dinoiser.enabled else "none"),
        "gamma": dinoiser.gamma,
        "dataset": settings.train_dataset,
        "metrics": metrics,
    }
    with atomic_dir(out) as tmp:
        shutil.copyfile(needed["sae.safetensors"], tmp / "sae.safetensors")
        for name in EXPORTED_TABLES:
            shutil.copyfile(needed[name], tmp / name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(config, metrics["saebench"]))
    return out


def load_export(source: str | Path) -> ExportedRun:
    """An exported run from a local folder, or from a Hub repository id when no such folder
    exists (``huggingface_hub.snapshot_download``; needs the network)."""
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=str(source)))
    return ExportedRun(
        sae=load_sae(folder / "sae.safetensors"),
        names=pq.read_table(folder / "names.parquet"),
        families=pq.read_table(folder / "families.parquet"),
        cooccurrence=pq.read_table(folder / "cooccurrence.parquet"),
        config=json.loads((folder / "config.json").read_text()),
    )
