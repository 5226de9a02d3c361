"""Cost curves: every stage after extraction at sizes a decade apart, time and peak memory.

Each (stage, size) runs in a fresh process on generated inputs shaped like real SAE codes
(k active concepts per patch, power-law concept frequencies, each image's patches drawing
from its own ~150 concepts, so a few concepts are dense in their images), in shards of
100,000 patches: a bigger run has more shards, as the workflow's does. The generation
is not timed; the stage is, with its peak RSS above the RSS it started at (sampled every
10 ms). A least-squares line through log(time) against log(size) gives the time exponent
(1: linear); memory growth is peak(largest) / peak(a tenth of it), and the marginal
memory the bytes added per unit (row, edge or term) from the smallest size to the largest.
Stages measured in edges or terms hold their output, which grows with them by nature; the
summary gives the largest growth over all stages and over the stages measured in rows.

    python benchmarks/scaling.py [--stages cooccurrence,family_dag] [--large]
                                 [--plot docs/scaling.png]

One JSON line per stage: ``stage``, ``unit``, ``sizes``, ``seconds``, ``peak_mib``,
``time_exponent``, ``memory_growth_per_decade``, ``marginal_bytes_per_unit`` and the fixed
sizes. The last line sums them up: ``ratio`` is the worst stage's throughput at its
largest size over its throughput at its smallest (the baseline: the same stage at the
smallest size; 1.0 is linear).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import PeakMemory, machine, report

M = 4096  # concepts where the stage's cost grows with m, not with its rows
SHARD_ROWS = 100_000  # patches per shard: a run grows by its number of shards, as the workflow's
D = 128  # feature width of the SAE stages (the paper's ViT-B-16 gives 512)
K = 12


@dataclass(frozen=True)
class Stage:
    unit: str
    sizes: tuple[int, ...]
    large: tuple[int, ...]
    fixed: dict = field(default_factory=dict)


STAGES = {
    "sae_training": Stage(
        "rows", (40_960, 409_600), (4_096_000,), {"d": D, "m": M, "k": K, "batch": 4096}
    ),
    "encoding": Stage("rows", (100_000, 1_000_000), (10_000_000,), {"d": D, "m": M}),
    "cooccurrence": Stage(
        "rows",
        (100_000, 300_000, 1_000_000),
        (3_000_000,),
        {"m": M, "k": K, "concepts_per_image": 150, "shard_rows": SHARD_ROWS},
    ),
    "family_dag": Stage(
        "edges",
        (50_000, 150_000, 500_000),
        (),
        {"m": 24_576, "reversed_share": 0.0035, "reversed_within": 0.667},
    ),
    "vocabulary": Stage(
        "terms",
        (2_000, 20_000),
        (100_000,),
        {"templates": "release", "backbone": "insight-tiny-ViT-B-16"},
    ),
    "naming_weights": Stage(
        "rows", (100_000, 300_000, 1_000_000), (3_000_000,), {"m": M, "top": 30}
    ),
    "naming_search": Stage(
        "terms", (2_000, 20_000, 100_000), (), {"m": M, "d": 512, "rows_per_term": 3}
    ),
    "browser": Stage(
        "rows",
        (100_000, 300_000, 1_000_000),
        (3_000_000, 10_000_000),
        {"m": M, "per_concept": 3, "per_band": 3},
    ),
}


def _concept_shards(folder: Path, patches: int, m: int) -> list[Path]:
    """Concept shards of SHARD_ROWS patches each."""
    from cooccurrence import generate_shards

    shards = max(1, patches // SHARD_ROWS)
    return generate_shards(folder, shards * SHARD_ROWS, m, K, shards, pool=150)


def _feature_shards(folder: Path, rows: int, d: int) -> list[Path]:
    """Feature shards of SHARD_ROWS patches each: the same random shard, linked."""
    first = _feature_shard(folder, min(rows, SHARD_ROWS), d)
    paths = [first]
    for index in range(1, max(1, rows // SHARD_ROWS)):
        paths.append(folder / f"shard-{index:05d}.parquet")
        paths[-1].symlink_to(first)
    return paths


def _feature_shard(folder: Path, rows: int, d: int) -> Path:
    import pyarrow as pa

    from insight.core.io import write_parquet

    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((rows, d), dtype=np.float32)
    table = pa.table(
        {
            "image_id": pa.array(
                np.char.add("img", (np.arange(rows) // 196).astype(str)).astype(object), pa.string()
            ),
            "patch": pa.array(np.arange(rows) % 196, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), d),
        }
    )
    path = folder / "shard-00000.parquet"
    write_parquet(table, path, row_group_size=65_536)
    return path


def setup(name: str, size: int, folder: Path) -> Callable[[], object]:
    """The stage ``name`` at ``size`` on generated inputs in ``folder``, ready to run."""
    fixed = STAGES[name].fixed
    if name == "sae_training":
        import torch

        from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, matryoshka_group_sizes
        from insight.sae.trainer import SAETrainer, TrainConfig

        torch.manual_seed(0)
        config = SAEConfig(d_in=D, d_sae=M, k=K, group_sizes=matryoshka_group_sizes(M))
        trainer = SAETrainer(
            MatryoshkaBatchTopKSAE(config),
            TrainConfig(lr=1e-4, batch_size=fixed["batch"], b_dec_init="zeros"),
            data=None,
            device=torch.device("cpu"),
        )
        batches = [torch.randn(fixed["batch"], D) for _ in range(4)]
        steps = size // fixed["batch"]

        def run() -> None:
            for step in range(steps):
                trainer.step(batches[step % 4])

        return run
    if name == "encoding":
        import torch

        from insight.sae.encode import encode_shard
        from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, matryoshka_group_sizes

        sae = MatryoshkaBatchTopKSAE(
            SAEConfig(d_in=D, d_sae=M, k=K, group_sizes=matryoshka_group_sizes(M))
        )
        paths = _feature_shards(folder, size, D)
        sample = torch.randn(4096, D)
        with torch.no_grad():  # the threshold that keeps k of m active, as a trained SAE's
            sae.set_threshold(
                torch.quantile(sae.pre_activations(sample).ravel()[:1_000_000], 1 - K / M)
            )

        def run() -> None:  # one encode_concepts job per shard, in turn
            for path in paths:
                encode_shard(sae, path, folder / f"concepts-{path.name}")

        return run
    if name == "cooccurrence":
        from insight.hierarchy.cooccurrence import cooccurrence_table, reduce_partials, totals_table
        from insight.hierarchy.streaming import shards_partial

        shards = _concept_shards(folder, size, M)

        def run() -> None:
            parts = []
            for i, shard in enumerate(shards):
                part = folder / f"part-{i}.safetensors"
                shards_partial([shard], M, 0.0).save(part)
                parts.append(part)
            partial = reduce_partials(parts, M)
            cooccurrence_table(partial, 0.05), totals_table(partial)

        return run
    if name == "family_dag":
        from family_dag import candidate_tables

        from insight.hierarchy.families import FamilyCriterion, family_dag

        cooccurrence, totals = candidate_tables(
            fixed["m"], size, fixed["reversed_share"], fixed["reversed_within"]
        )
        return lambda: family_dag(cooccurrence, totals, FamilyCriterion())
    if name == "vocabulary":
        import torch

        from insight.core.settings import section_settings
        from insight.models.backbone import BackboneSpec
        from insight.naming.embed import embed_vocabulary

        terms = [f"term{i:06d}" for i in range(size)]
        spec = BackboneSpec(model=fixed["backbone"], pretrained=None)
        settings = section_settings("vocabulary", {"templates": fixed["templates"]})
        cpu = torch.device("cpu")
        embed_vocabulary(terms, spec, settings, folder / "cache", cpu)  # fills the cache
        return lambda: embed_vocabulary(terms, spec, settings, folder / "cache", cpu)
    if name == "naming_weights":
        from insight.naming.names import top_patch_weights

        shards = _concept_shards(folder, size, M)
        return lambda: top_patch_weights(shards, None, fixed["top"], "active")
    if name == "naming_search":
        import faiss

        from insight.naming.names import name_vectors

        rng = np.random.default_rng(0)
        rows = rng.standard_normal((size * fixed["rows_per_term"], fixed["d"]), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(fixed["d"])
        index.add(rows)
        terms = [f"term{i // fixed['rows_per_term']}" for i in range(len(rows))]
        vectors = rng.standard_normal((M, fixed["d"]), dtype=np.float32)
        return lambda: name_vectors(vectors, index, terms)
    if name == "browser":
        from insight.views.browser.examples import top_activations
        from insight.views.browser.queries import activation_histograms

        shards = _concept_shards(folder, size, M)
        return lambda: (
            top_activations(shards, fixed["per_concept"], fixed["per_band"]),
            activation_histograms(shards),
        )
    raise KeyError(name)


def measure(name: str, size: int) -> dict:
    """Time and peak memory of one stage at one size (run in a child process)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = setup(name, size, Path(tmp))
        with PeakMemory() as peak:
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": peak.mib}


def exponent(sizes: list[int], values: list[float]) -> float:
    """The slope of log(value) against log(size): value ~ size ** slope."""
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def memory_growth(sizes: list[int], peaks: list[float]) -> float | None:
    """Peak memory at the largest size over the peak at the size nearest a tenth of it."""
    tenth = min(range(len(sizes)), key=lambda i: abs(np.log(sizes[i] * 10 / sizes[-1])))
    if tenth == len(sizes) - 1:
        return None
    return max(peaks[-1], 1.0) / max(peaks[tenth], 1.0)


def curve(name: str, large: bool) -> dict:
    stage = STAGES[name]
    sizes = list(stage.sizes + (stage.large if large else ()))
    rows = []
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, str(size)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(
            f"{name} {size:>10,} {stage.unit}: {rows[-1]['seconds']:8.2f} s, {rows[-1]['peak_mib']:8.1f} MiB",
            file=sys.stderr,
        )
    seconds = [r["seconds"] for r in rows]
    peaks = [r["peak_mib"] for r in rows]
    return {
        "stage": name,
        "unit": stage.unit,
        "sizes": sizes,
        "seconds": [round(s, 3) for s in seconds],
        "peak_mib": [round(p, 1) for p in peaks],
        "time_exponent": round(exponent(sizes, seconds), 3),
        "memory_growth_per_decade": memory_growth(sizes, peaks),
        "marginal_bytes_per_unit": round(
            (peaks[-1] - peaks[0]) * 2**20 / max(sizes[-1] - sizes[0], 1), 1
        ),
        "throughput_ratio": (sizes[-1] / seconds[-1]) / (sizes[0] / seconds[0]),
        **stage.fixed,
    }


def plot(curves: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, c in enumerate(curves):
        label = f"{c['stage']} ({c['unit']}, slope {c['time_exponent']:.2f})"
        left.loglog(c["sizes"], c["seconds"], "o-", color=f"C{i}", label=label)
        right.loglog(
            c["sizes"], np.maximum(c["peak_mib"], 1.0), "o-", color=f"C{i}", label=c["stage"]
        )
    left.set(xlabel="size (rows, edges or terms)", ylabel="seconds (2 CPU cores)", title="time")
    right.set(xlabel="size (rows, edges or terms)", ylabel="peak MiB above start", title="memory")
    left.legend(fontsize=7)
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stage names")
    parser.add_argument("--large", action="store_true", help="add each stage's largest sizes")
    parser.add_argument("--plot", type=Path, default=None, help="write the log-log plot here")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    start = time.perf_counter()
    curves = []
    for name in args.stages.split(","):
        curves.append(curve(name, args.large))
        print(json.dumps(curves[-1], sort_keys=True))
    if args.plot:
        plot(curves, args.plot)
    worst = min(curves, key=lambda c: c["throughput_ratio"])
    growth = [c["memory_growth_per_decade"] for c in curves if c["memory_growth_per_decade"]]
    in_rows = [
        c["memory_growth_per_decade"]
        for c in curves
        if c["memory_growth_per_decade"] and c["unit"] == "rows"
    ]
    report(
        {
            "stage": "scaling",
            "baseline": "each stage at its smallest size (ratio: the worst stage's throughput at its largest size over its smallest; 1.0 is linear)",
            "ratio": round(worst["throughput_ratio"], 3),
            "worst_stage": worst["stage"],
            "max_time_exponent": max(c["time_exponent"] for c in curves),
            "max_memory_growth_per_decade": round(max(growth), 3) if growth else None,
            "max_memory_growth_per_decade_of_rows": round(max(in_rows), 3) if in_rows else None,
            "memory_growth_by_stage": {
                c["stage"]: round(c["memory_growth_per_decade"], 3)
                for c in curves
                if c["memory_growth_per_decade"]
            },
            "stages": len(curves),
            "total_s": round(time.perf_counter() - start, 1),
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
