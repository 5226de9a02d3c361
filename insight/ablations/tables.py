"""Gather the default run's and each variant's results into tables with a ``variant`` column.

A run is given as the paths of its outputs by kind: ``sae`` (sae.json), ``families``
(family_quality.json), ``names`` (names.parquet) and, when the run made them,
``interpretability``, ``ovs``, ``classification`` (the task tables, CSV) and ``world``
(the demo's world_recovery.json).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

import pyarrow.parquet as pq

from insight.core.io import read_json

Row = dict[str, object]
TASK_TABLES = ("interpretability", "ovs", "classification")
HEADLINE = (
    ("fve", "FVE (held-out)"),
    ("l0", "L0"),
    ("dead_latents", "dead latents"),
    ("locality", "Locality"),
    ("consistency", "Consistency"),
    ("impurity", "Impurity"),
    ("ovs_miou", "OVS mIoU"),
    ("top1", "probe top-1"),
    ("edges", "family edges"),
    ("max_direct_children", "max direct children"),
    ("planted_ratio", "planted / shuffled"),
    ("world_named", "top concepts world-named"),
    ("part_own_word", "part concepts own word"),
)
"""The headline figure of each task: (column, label) of ``results/ablation_table.md``."""


def _read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def sae_row(report: Mapping) -> Row:
    """The SAE's core metrics on held-out images (FVE, L0 after the threshold, dead
    latents, SAEBench's alive fraction) and the settings it was trained with."""
    heldout = report["metrics"]["heldout"]
    return {
        "fve": heldout["fve"],
        "l0": heldout.get("l0_threshold", heldout.get("l0_batch_topk")),
        "dead_latents": heldout["dead_latents"],
        "frac_alive": heldout.get("saebench", {}).get("frac_alive"),
        "d_sae": report["config"]["d_sae"],
        "groups": len(report["config"]["group_sizes"]),
        "k": report["config"]["k"],
    }


def family_row(quality: Mapping, world: Mapping | None) -> Row:
    """Family quality (edges, direct edges, hubs, replication) and, on the demo, the edges
    that mirror a planted part-of relation against shuffled parents."""
    row: Row = {
        "edges": quality["edges"],
        "direct_edges": quality["direct_edges"],
        "equivalent_pairs": quality["equivalent_pairs"],
        "dense_concepts": quality["dense_concepts"],
        "max_children": quality["children_per_concept"]["max"],
        "max_direct_children": quality["direct_children_per_concept"]["max"],
        "replicating_share": quality["replicating_share"],
    }
    if world is not None:
        families = world["families"]
        shuffled = families["planted_edges_shuffled_parents"]
        row["planted_edges"] = families["planted_edges"]
        row["planted_edges_shuffled_parents"] = shuffled
        row["planted_ratio"] = families["planted_edges"] / shuffled if shuffled else None
    return row


def naming_row(names_path: str | Path, world: Mapping | None) -> Row:
    """How concepts were named: the median cosine of a name, and on the demo the most
    frequent concepts named with world words and the part concepts named with their own."""
    scores = pq.read_table(names_path, columns=["score"])["score"].to_pylist()
    scored = [s for s in scores if s is not None and not math.isnan(s)]
    row: Row = {
        "concepts": len(scores),
        "scored": len(scored),
        "median_score": statistics.median(scored) if scored else None,
    }
    if world is not None:
        naming = world["naming"]
        own_word = naming["part_concepts_own_word"]
        row.update(
            world_named=naming["world_named"],
            top_concepts=naming["top_concepts"],
            part_own_word=own_word["named"],
            part_own_word_shuffled=own_word["shuffled_names"],
            part_concepts=naming["part_concepts"],
        )
    return row


def ablation_tables(runs: Mapping[str, Mapping[str, str]]) -> dict[str, list[Row]]:
    """Each task's rows for every run, marked with its ``variant`` (the first column)."""
    tables: dict[str, list[Row]] = {
        name: [] for name in ("sae", *TASK_TABLES, "families", "naming")
    }
    for variant, paths in runs.items():
        world = read_json(paths["world"]) if "world" in paths else None
        tables["sae"].append({"variant": variant, **sae_row(read_json(paths["sae"]))})
        tables["families"].append(
            {"variant": variant, **family_row(read_json(paths["families"]), world)}
        )
        tables["naming"].append({"variant": variant, **naming_row(paths["names"], world)})
        for task in TASK_TABLES:
            if task in paths:
                tables[task] += [{"variant": variant, **row} for row in _read_csv(paths[task])]
    return {name: rows for name, rows in tables.items() if rows}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def headline(tables: Mapping[str, list[Row]]) -> list[Row]:
    """One row per variant: the headline figure of each task (``HEADLINE``). Task figures
    are INSIGHT's row, averaged over the benchmarks and datasets that ran."""
    rows = []
    for sae in tables["sae"]:
        variant = sae["variant"]
        row: Row = {"variant": variant, **{k: sae[k] for k in ("fve", "l0", "dead_latents")}}
        mine = {
            task: [r for r in tables.get(task, []) if r["variant"] == variant]
            for task in TASK_TABLES
        }
        insight_rows = [
            r for r in mine["interpretability"] if r["method"] == "insight" and not r["status"]
        ]
        for metric in ("locality", "consistency", "impurity"):
            row[metric] = _mean([_number(r[metric]) for r in insight_rows])
        ovs = [r for r in mine["ovs"] if r["method"] == "insight"]
        row["ovs_miou"] = _mean(
            [_number(v) for r in ovs for k, v in r.items() if k not in ("variant", "method")]
        )
        probes = [r for r in mine["classification"] if r["method"] == "insight"]
        row["top1"] = _mean([_number(r["top1"]) for r in probes if not r["status"]])
        for table in ("families", "naming"):
            found = next(r for r in tables[table] if r["variant"] == variant)
            row.update({k: v for k, v in found.items() if k != "variant"})
        rows.append(row)
    return rows


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def headline_markdown(rows: list[Row]) -> str:
    """The headline rows as a Markdown table, one column per variant (figures that no run
    measured are left out)."""
    present = [(key, label) for key, label in HEADLINE if any(r.get(key) is not None for r in rows)]
    lines = ["| figure | " + " | ".join(str(r["variant"]) for r in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for key, label in present:
        lines.append(f"| {label} | " + " | ".join(_shown(r.get(key)) for r in rows) + " |")
    return "\n".join(lines) + "\n"


def plot_headline(rows: list[Row], path: str | Path) -> None:
    """One small bar chart per headline figure, a bar per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(key, label) for key, label in HEADLINE if any(r.get(key) is not None for r in rows)]
    columns = 4
    lines = -(-len(present) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.4 * lines), squeeze=False)
    variants = [str(r["variant"]) for r in rows]
    for axis, (key, label) in zip(axes.flat, present, strict=False):
        values = [float(r[key]) if r.get(key) is not None else 0.0 for r in rows]
        axis.bar(variants, values, color=[f"C{i}" for i in range(len(rows))])
        axis.set_title(label, fontsize=9)
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
        axis.tick_params(axis="y", labelsize=7)
    for axis in axes.flat[len(present) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_rows(rows: list[Row], path: str | Path) -> None:
    """Rows as CSV, the union of their keys as columns in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
