"""Co-occurrence stage vs a DuckDB self-join GROUP BY.

Generates concept shards in the contract (m concepts, about k active per patch with a
Zipf-like concept frequency), then in one process computes D's numerator and
denominators with the stage (per-shard partials + reduce) and with DuckDB
(``a join b using (image_id, patch) group by a.concept, b.concept``), checks they agree,
and reports both times and peak memory (RSS above the start, sampled every 10 ms).

    python benchmarks/cooccurrence.py [--patches 1000000 --m 8192 --k 12 --shards 4]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
from _common import machine, report

from insight.core.io import write_parquet
from insight.hierarchy.cooccurrence import reduce_partials, shards_partial
from insight.sae.encode import concept_schema


def generate_shards(
    out: Path, patches: int, m: int, k: int, shards: int, seed: int = 0
) -> list[Path]:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, m + 1) ** 0.8
    popularity /= popularity.sum()
    paths = []
    per_shard = patches // shards
    for shard in range(shards):
        cols = np.sort(rng.choice(m, size=(per_shard, k), p=popularity), axis=1)
        keep = np.ones_like(cols, dtype=bool)
        keep[:, 1:] = cols[:, 1:] != cols[:, :-1]  # distinct concepts per patch
        patch_ids = shard * per_shard + np.arange(per_shard)
        image = np.broadcast_to((patch_ids // 196)[:, None], cols.shape)[keep]
        table = pa.table(
            {
                "image_id": pa.array(
                    np.char.add("img", image.astype(str)).astype(object), pa.string()
                ),
                "patch": np.broadcast_to((patch_ids % 196)[:, None], cols.shape)[keep].astype(
                    np.int32
                ),
                "concept": cols[keep].astype(np.int32),
                "activation": rng.gamma(2.0, 1.0, size=int(keep.sum())).astype(np.float32),
            },
            schema=concept_schema("14,14", m),
        )
        path = out / f"shard-{shard:05d}.parquet"
        write_parquet(table, path, row_group_size=1_000_000)
        paths.append(path)
    return paths


class PeakMemory:
    """Peak RSS above the starting RSS while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--shards-per-partial", type=int, default=8, help="as hierarchy.shards_per_partial"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = generate_shards(tmp, args.patches, args.m, args.k, args.shards)
        rows = sum(duckdb.sql(f"select count(*) from '{p}'").fetchall()[0][0] for p in paths)

        def stage(per_partial: int) -> tuple[float, object]:
            """The partial jobs (each over ``per_partial`` shards), then the reduce job."""
            start = time.perf_counter()
            groups = [paths[i : i + per_partial] for i in range(0, len(paths), per_partial)]
            for i, group in enumerate(groups):
                shards_partial(group, args.m).save(tmp / f"partial-{i}.safetensors")
            result = reduce_partials(
                [tmp / f"partial-{i}.safetensors" for i in range(len(groups))], args.m
            )
            return time.perf_counter() - start, result

        stage(args.shards_per_partial)  # compile the numba kernel (cached on disk afterwards)
        with PeakMemory() as project_memory:
            project_s, partial = stage(args.shards_per_partial)
        one_per_shard_s, _ = stage(1)

        glob = str(tmp / "shard-*.parquet")
        with PeakMemory() as duckdb_memory:
            start = time.perf_counter()
            pairs = duckdb.sql(
                f"select a.concept, b.concept as other, sum(a.activation::double) as numerator "
                f"from '{glob}' a join '{glob}' b using (image_id, patch) group by all"
            ).to_arrow_table()
            duckdb_s = time.perf_counter() - start

        concept = pairs["concept"].to_numpy()
        other = pairs["other"].to_numpy()
        max_diff = float(
            np.abs(partial.numerator[concept, other] - pairs["numerator"].to_numpy()).max()
        )
        agree = max_diff <= 1e-6 * float(np.abs(partial.numerator).max()) and len(concept) == int(
            (partial.numerator != 0).sum()
        )
        print(f"project {project_s:.2f} s, DuckDB self-join {duckdb_s:.2f} s, agree={agree}")

    report(
        {
            "stage": "cooccurrence",
            "baseline": "DuckDB self-join on (image_id, patch) GROUP BY concept pair",
            "patches": args.patches,
            "rows": rows,
            "m": args.m,
            "k": args.k,
            "shards": args.shards,
            "ratio": round(duckdb_s / project_s, 3),
            "project_s": round(project_s, 3),
            "shards_per_partial": args.shards_per_partial,
            "ratio_one_partial_per_shard": round(duckdb_s / one_per_shard_s, 3),
            "baseline_s": round(duckdb_s, 3),
            "project_peak_mib": round(project_memory.mib, 1),
            "baseline_peak_mib": round(duckdb_memory.mib, 1),
            "same_numerator": agree,
            "max_abs_difference": max_diff,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
