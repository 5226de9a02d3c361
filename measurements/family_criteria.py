"""The family criteria side by side on the demo, over SAE seeds (docs/families.md).

From a finished demo (``snakemake --cores 2 --configfile config/demo.yaml``), for each
``sae.seed``: copies the workflow, its results and Snakemake's metadata into a scratch
folder, retrains the SAE with that seed and reruns what follows it up to the world
recovery, once per reading (``hierarchy.criterion`` confidence / baseline, B.9 with all
or direct parents), and collects from ``world_recovery.json`` and
``family_quality.json``: edges, the most frequent concept's children, the most direct
children, planted edges against shuffled parents, and the B.9 names (top-20 world-named,
part concepts with their own word). Prints a Markdown table and, last, one JSON line.

    python measurements/family_criteria.py [--seeds 0 1 2 3] [--scratch /tmp/families]
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


def run(scratch: Path, seed: int, criterion: str, parents: str) -> dict:
    override = {
        "sae": {"seed": seed},
        "hierarchy": {"criterion": criterion},
        "naming": {"parents": parents},
    }
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/insight-family-criteria"))
    args = parser.parse_args()
    if not (ROOT / "results/demo/world_recovery.json").exists():
        sys.exit("run the demo first: snakemake --cores 2 --configfile config/demo.yaml")
    rows = []
    for seed in args.seeds:
        scratch = args.scratch / f"seed-{seed}"
        prepare(scratch)
        for reading, (criterion, parents) in READINGS.items():
            result = run(scratch, seed, criterion, parents)
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
