"""Training curves for the report: the SAE's per-step history and the demo CLIP's loss.

``training_history`` gathers one long table (``model``, ``step``, ``metric``, ``value``)
from ``sae.json`` (logged every ``log_every`` steps: loss, FVE, L0, dead latents, aux-k
loss) and, when the run trained its CLIP, ``clip_training.json`` (the loss per epoch);
``curves_png`` plots one panel per (model, metric).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from insight.core.io import atomic_path

HISTORY_SCHEMA = pa.schema(
    [("model", pa.string()), ("step", pa.int64()), ("metric", pa.string()), ("value", pa.float64())]
)


def training_history(sae_json: str | Path | None, clip_json: str | Path | None) -> pa.Table:
    """The long history table of the run's trained models (module docstring)."""
    rows: list[tuple[str, int, str, float]] = []
    if sae_json:
        for entry in json.loads(Path(sae_json).read_text()).get("history", []):
            rows += [
                ("sae", int(entry["step"]), metric, float(value))
                for metric, value in entry.items()
                if metric != "step"
            ]
    if clip_json:
        losses = json.loads(Path(clip_json).read_text()).get("loss_per_epoch", [])
        rows += [
            ("clip", epoch + 1, "loss per epoch", float(loss)) for epoch, loss in enumerate(losses)
        ]
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    return pa.table(dict(zip(HISTORY_SCHEMA.names, columns, strict=True)), schema=HISTORY_SCHEMA)


def curves_png(history: pa.Table, path: str | Path) -> None:
    """One panel per (model, metric) of ``history`` against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = history.to_pylist()
    panels = sorted({(r["model"], r["metric"]) for r in records})
    columns = 3
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_visible(False)
    for axis, (model, metric) in zip(axes.flat, panels, strict=False):
        points = sorted(
            (r["step"], r["value"]) for r in records if (r["model"], r["metric"]) == (model, metric)
        )
        axis.set_visible(True)
        axis.plot(
            [s for s, _ in points], [v for _, v in points], marker="." if len(points) < 30 else None
        )
        axis.set_title(f"{model}: {metric}", fontsize=10)
        axis.set_xlabel("epoch" if model == "clip" else "step", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
