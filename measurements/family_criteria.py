"""The family criteria side by side on the demo, over SAE seeds (docs/families.md).

From a finished demo (``snakemake --cores 2 --configfile config/demo.yaml``), for each
``sae.seed``: copies the workflow, its results and Snakemake's metadata into a scratch
folder, retrains the SAE with that seed and reruns what follows it up to the world
recovery, once per reading (``hierarchy.criterion`` confidence / baseline, B.9 with all
or direct parents), and collects from ``world_recovery.json`` and
``family_quality.json``: edges, the most frequent concept's children, the most direct
children, planted edges against shuffled parents, and the B.9 names (top-20 world-named,
part concepts with their own word). Prints a Markdown table and, last, one JSON line.

With ``--sweep``, each seed's SAE and what follows it run once; then, in this process,
every (``hierarchy.lift``, ``hierarchy.z``) of the grid below builds the baseline's DAG
from the same D and names the concepts with B.9 (direct and all parents), next to the
confidence criterion: the settings' frontier between hubs, planted edges and names.
``--hierarchy-images N`` builds the families from N new scenes (the SAE unchanged) and
``--override FILE`` sets anything else (e.g. ``sae.d_sae``) for every run.

    python measurements/family_criteria.py [--seeds 0 1 2 3] [--scratch /tmp/families]
    python measurements/family_criteria.py --sweep [--lifts 0.2 0.3 ...] [--zs 1 1.96]
    python measurements/family_criteria.py --sweep --seeds 0 --hierarchy-images 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["results/demo/world_recovery.json", "results/hierarchy/family_quality.json"]
READINGS = {  # name: (criterion, B.9's parents)
    "confidence": ("confidence", "all"),
    "confidence, direct parents": ("confidence", "direct"),
    "baseline": ("baseline", "all"),
    "baseline, direct parents": ("baseline", "direct"),
}


def prepare(scratch: Path) -> None:
    """The workflow's tracked files, the finished demo's results and Snakemake's metadata."""
    if scratch.exists():
        shutil.rmtree(scratch)
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, scratch / name)
    shutil.copytree(ROOT / "results", scratch / "results", symlinks=True)
    shutil.copytree(ROOT / ".snakemake/metadata", scratch / ".snakemake/metadata")


def run(
    scratch: Path,
    seed: int,
    criterion: str,
    parents: str,
    images: int | None = None,
    hierarchy_images: int | None = None,
    extra: dict | None = None,
) -> dict:
    """Retrain the SAE with ``seed`` and rerun what follows it under one reading;
    ``images`` regenerates the world with that many scenes (the SAE trains on them too),
    ``hierarchy_images`` builds the families from that many new scenes instead, the SAE
    unchanged; ``extra`` is merged over the overrides (an ``--override`` file)."""
    override: dict = {
        "sae": {"seed": seed},
        "hierarchy": {"criterion": criterion},
        "naming": {"parents": parents},
        **({"demo": {"images": images}} if images else {}),
    }
    if hierarchy_images:
        from insight.demo.layouts import make_scene_images

        folder = scratch / "results/demo/hierarchy_images"
        if not folder.exists():
            make_scene_images(folder, hierarchy_images, seed=1)
        override["datasets"] = {"hierarchy": {"source": str(folder), "kind": "folder"}}
        override["encode_datasets"] = ["demo", "hierarchy"]
        override["hierarchy"]["dataset"] = "hierarchy"
    for key, value in (extra or {}).items():
        override[key] = {**override.get(key, {}), **value} if isinstance(value, dict) else value
    (scratch / "override.yaml").write_text(yaml.safe_dump(override))
    start = time.perf_counter()
    with open(scratch / "snakemake.log", "a") as log:
        subprocess.run(
            [
                "snakemake",
                *TARGETS,
                "--cores",
                "2",
                "--configfile",
                "config/demo.yaml",
                "override.yaml",
            ],
            cwd=scratch,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    recovery = json.loads((scratch / TARGETS[0]).read_text())
    quality = json.loads((scratch / TARGETS[1]).read_text())
    naming = recovery["naming"]
    own = naming["part_concepts_own_word"]
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "by_criterion": recovery["families_by_criterion"],
        "quality": {k: v for k, v in quality.items() if k != "config"},
        "world_named": naming["world_named"],
        "part_concepts": naming["part_concepts"],
        "part_own_word": own["named"],
        "part_own_word_shuffled": own["shuffled_names"],
    }


def sweep(scratch: Path, seed: int, lifts: list[float], zs: list[float]) -> list[dict]:
    """Every (lift, z) of the grid (and the confidence criterion) on one seed's D, from
    the run :func:`run` left in ``scratch``: DAG figures, planted edges and B.9 names."""
    import dataclasses
    import os

    import pyarrow.parquet as pq
    import torch

    from insight.cli import load_config
    from insight.core.io import write_parquet
    from insight.core.layout import RunLayout
    from insight.demo.recovery import (
        family_recovery,
        own_word_naming,
        world_labels,
        world_named_share,
    )
    from insight.hierarchy.families import (
        families_table,
        family_criterion,
        family_dag,
        family_quality,
    )
    from insight.models.frozen import model_bundle
    from insight.naming.names import concept_names, name_concepts
    from insight.views.run import run_dinoiser

    os.chdir(scratch)  # the demo's paths are relative to the workflow
    settings = load_config(["config/demo.yaml", "override.yaml"])
    run_files = RunLayout("results")
    part, obj, _ = world_labels(
        "results/demo/parts",
        model_bundle(settings, run_dinoiser(settings, run_files)),
        run_files.sae_weights,
        torch.device("cpu"),
    )
    cooccurrence = pq.read_table(run_files.cooccurrence)
    totals = pq.read_table(run_files.totals)
    top = int(totals["frequency"].to_numpy().argmax())
    dataset = settings.hierarchy.dataset or settings.train_dataset
    shards = sorted(str(p) for p in Path(f"results/concepts/{dataset}").glob("shard-*.parquet"))
    configured = family_criterion(settings.hierarchy)
    grid = [dataclasses.replace(configured, name="confidence")] + [
        dataclasses.replace(configured, name="baseline", lift=h, z=z) for z in zs for h in lifts
    ]
    families = scratch / "sweep-families.parquet"  # each setting's DAG, for B.9 to read
    rows = []
    for criterion in grid:
        name = criterion.name
        graph, report = family_dag(cooccurrence, totals, criterion)
        quality = family_quality(
            graph, report["equivalents"], totals, settings.hierarchy.dense_coverage
        )
        recovered = family_recovery(sorted(graph.edges), part, obj)
        write_parquet(families_table(graph), families)
        row = {
            "seed": seed,
            "criterion": name,
            "lift": criterion.lift if name == "baseline" else None,
            "z": criterion.z if name == "baseline" else None,
            "edges": quality["edges"],
            "direct_edges": quality["direct_edges"],
            "top_children": graph.out_degree(top) if top in graph else 0,
            "max_direct_children": quality["direct_children_per_concept"]["max"],
            "planted": recovered["planted_edges"],
            "shuffled": round(recovered["planted_edges_shuffled_parents"], 2),
        }
        for parents in ("direct", "all"):
            names = name_concepts(
                run_files.sae_weights,
                families,
                run_files.totals,
                shards,
                run_files.embeddings,
                run_files.vocabulary_index,
                dataclasses.replace(settings.naming, parents=parents),
                run_files.cooccurrence,
                settings.hierarchy.threshold,
            )
            own = own_word_naming(part, concept_names(names))
            row[f"top20_{parents}"] = world_named_share(names, 20)["world_named"]
            row[f"own_word_{parents}"] = own["named"]
            row[f"own_word_shuffled_{parents}"] = round(own["shuffled_names"], 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    os.chdir(ROOT)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/insight-family-criteria"))
    parser.add_argument("--sweep", action="store_true", help="the (lift, z) grid, in process")
    parser.add_argument("--lifts", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--zs", type=float, nargs="+", default=[1.0, 1.96])
    parser.add_argument("--images", type=int, help="demo.images: a larger world (default 200)")
    parser.add_argument(
        "--hierarchy-images", type=int, help="families from this many new scenes, same SAE"
    )
    parser.add_argument("--override", type=Path, help="a YAML file of settings over the demo's")
    args = parser.parse_args()
    extra = yaml.safe_load(args.override.read_text()) if args.override else None
    if not (ROOT / "results/demo/world_recovery.json").exists():
        sys.exit("run the demo first: snakemake --cores 2 --configfile config/demo.yaml")
    rows = []
    if args.sweep:
        for seed in args.seeds:
            scratch = args.scratch / f"seed-{seed}"
            prepare(scratch)
            run(scratch, seed, "confidence", "direct", args.images, args.hierarchy_images, extra)
            rows += sweep(scratch, seed, args.lifts, args.zs)
        summary = {
            "measurement": "family_settings",
            "seeds": args.seeds,
            "images": args.images,
            "hierarchy_images": args.hierarchy_images,
            "override": extra,
        }
        print(json.dumps({**summary, "rows": rows}))
        return
    for seed in args.seeds:
        scratch = args.scratch / f"seed-{seed}"
        prepare(scratch)
        for reading, (criterion, parents) in READINGS.items():
            result = run(
                scratch, seed, criterion, parents, args.images, args.hierarchy_images, extra
            )
            rows.append({"seed": seed, "reading": reading, **result})
            print(f"seed {seed}, {reading}: {json.dumps(result)}", flush=True)
    print(
        "| seed | reading | edges | direct | top concept's children | most direct children "
        "| planted (shuffled) | top-20 world-named | parts with own word (shuffled) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        fam = row["by_criterion"][READINGS[row["reading"]][0]]
        print(
            f"| {row['seed']} | {row['reading']} | {fam['edges']} | {fam['direct_edges']} "
            f"| {fam['most_frequent_concept_children']} | {fam['max_direct_children']} "
            f"| {fam['planted_edges']} ({fam['planted_edges_shuffled_parents']:.1f}) "
            f"| {row['world_named']} | {row['part_own_word']} of {row['part_concepts']} "
            f"({row['part_own_word_shuffled']:.1f}) |"
        )
    print(json.dumps({"measurement": "family_criteria", "seeds": args.seeds, "rows": rows}))


if __name__ == "__main__":
    main()
