"""Co-occurrence stage vs DuckDB self-joins GROUP BY.

Generates concept shards in the contract (m concepts, about k active per patch with a
Zipf-like concept frequency), then in one process computes D's numerator and
denominators, and the baseline criterion's image-level sums (``sum_g W_j(g) n_j'(g) / P_g``
and the images where both fire), with the stage (per-shard partials + reduce) and with
DuckDB (``a join b using (image_id, patch) group by a.concept, b.concept``, then the same
on per-image aggregates joined on ``image_id``), checks they agree, and reports the times,
the DuckDB time of the image-level sums alone (their extra cost) and peak memory (RSS
above the start, sampled every 10 ms).

    python benchmarks/cooccurrence.py [--patches 1000000 --m 8192 --k 12 --shards 4]
                                      [--concepts-per-image 0]  (0: the worst case)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from _common import PeakMemory, machine, report

from insight.core.io import write_parquet
from insight.hierarchy.cooccurrence import reduce_partials
from insight.hierarchy.streaming import shards_partial
from insight.sae.encode import concept_schema


def image_codes(
    rng: np.random.Generator, images: int, m: int, k: int, pool: int, popularity: np.ndarray
) -> np.ndarray:
    """``(images * 196, k)`` concept draws: each image's patches draw from its own ``pool``
    concepts (by popularity), as neighbouring patches of a real image share concepts (the
    demo's SAE fires about 100 distinct concepts per image); ``pool`` 0 draws every patch
    from all m concepts independently, the worst case for the per-image sums."""
    if pool == 0:
        return rng.choice(m, size=(images * 196, k), p=popularity)
    draws = np.empty((images, 196, k), dtype=np.int64)
    for image in range(images):
        chosen = rng.choice(m, size=pool, replace=False, p=popularity)
        weights = popularity[chosen] / popularity[chosen].sum()
        draws[image] = chosen[rng.choice(pool, size=(196, k), p=weights)]
    return draws.reshape(-1, k)


def generate_shards(
    out: Path, patches: int, m: int, k: int, shards: int, pool: int = 0, seed: int = 0
) -> list[Path]:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, m + 1) ** 0.8
    popularity /= popularity.sum()
    paths = []
    per_shard = patches // shards // 196 * 196  # whole images per shard
    for shard in range(shards):
        cols = np.sort(image_codes(rng, per_shard // 196, m, k, pool, popularity), axis=1)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--concepts-per-image",
        type=int,
        default=0,
        help="each image's patches draw from this many concepts (150: about what the demo's "
        "SAE fires per image); 0: every patch from all m, the worst case",
    )
    parser.add_argument(
        "--shards-per-partial", type=int, default=8, help="as hierarchy.shards_per_partial"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = generate_shards(
            tmp, args.patches, args.m, args.k, args.shards, args.concepts_per_image
        )
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
            patch_pairs_s = time.perf_counter() - start
            image_pairs = duckdb.sql(
                f"""
                with per_image as (
                    select image_id, concept, sum(activation::double) as mass, count(*) as n
                    from '{glob}' group by all
                )
                select a.concept, b.concept as other, sum(a.mass * b.n / 196.0) as baseline,
                       count(*) as images
                from per_image a join per_image b using (image_id) group by all
                """
            ).to_arrow_table()
            duckdb_s = time.perf_counter() - start
        image_pairs_s = duckdb_s - patch_pairs_s

        merged = partial.whole()
        max_diff, agree = 0.0, True
        for table, column, ours in (
            (pairs, "numerator", merged.numerator),
            (image_pairs, "baseline", merged.baseline),
            (image_pairs, "images", merged.pair_images),
        ):
            concept, other = table["concept"].to_numpy(), table["other"].to_numpy()
            diff = float(np.abs(ours[concept, other] - table[column].to_numpy()).max())
            max_diff = max(max_diff, diff / float(np.abs(ours).max()))
            agree &= diff <= 1e-6 * float(np.abs(ours).max())
            agree &= len(concept) == int((ours != 0).sum())
        print(f"project {project_s:.2f} s, DuckDB self-joins {duckdb_s:.2f} s, agree={agree}")

    report(
        {
            "stage": "cooccurrence",
            "baseline": "DuckDB self-joins on (image_id, patch) and on image_id, GROUP BY concept pair",
            "patches": args.patches // args.shards // 196 * 196 * args.shards,
            "rows": rows,
            "m": args.m,
            "k": args.k,
            "shards": args.shards,
            "concepts_per_image": args.concepts_per_image,
            "ratio": round(duckdb_s / project_s, 3),
            "project_s": round(project_s, 3),
            "shards_per_partial": args.shards_per_partial,
            "ratio_one_partial_per_shard": round(duckdb_s / one_per_shard_s, 3),
            "baseline_s": round(duckdb_s, 3),
            "baseline_image_sums_s": round(image_pairs_s, 3),
            "project_peak_mib": round(project_memory.mib, 1),
            "baseline_peak_mib": round(duckdb_memory.mib, 1),
            "same_sums": agree,
            "max_relative_difference": max_diff,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
