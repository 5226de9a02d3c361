"""Concept-browser thumbnails vs drawing each one with matplotlib.

Project: ``render_thumbnails`` (each image decoded once for all its concepts, the
heatmap blended with NumPy and a colour map lookup, resized and saved as JPEG by
Pillow). Baseline: the usual notebook way, one matplotlib figure per thumbnail
(``imshow`` of the image, ``imshow`` of the upsampled heatmap with alpha, ``savefig``).
Also times a rebuild from the cache, which draws nothing. Generated 224x224 images and
sparse 14x14 activations.

    python benchmarks/browser.py [--images 40 --concepts-per-image 4]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from _common import best_time, machine, report
from _common import parser as benchmark_parser
from PIL import Image

from insight.data.images import ImageRef
from insight.views.browser.thumbnails import render_thumbnails
from insight.views.heatmaps import COLOUR_MAP, activation_grid


def matplotlib_thumbnails(top: pa.Table, refs: dict, out: Path, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for i, row in enumerate(top.to_pylist()):
        image = np.asarray(Image.open(refs[row["image_id"]].path).convert("RGB"))
        heat = activation_grid(row["patches"], np.asarray(row["activations"]), (14, 14))
        figure = plt.figure(figsize=(size / 100, size / 100), dpi=100)
        axis = figure.add_axes((0, 0, 1, 1))
        axis.imshow(image)
        axis.imshow(
            heat, cmap=COLOUR_MAP, alpha=0.6, extent=(0, 224, 224, 0), interpolation="bilinear"
        )
        axis.axis("off")
        figure.savefig(out / f"{i}.jpg")
        plt.close(figure)


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--concepts-per-image", type=int, default=4)
    parser.add_argument("--size", type=int, default=170)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        refs = {}
        for i in range(args.images):
            path = root / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (224, 224, 3), np.uint8)).save(path)
            refs[path.name] = ImageRef(path.name, str(path))
        rows = {"concept": [], "image_id": [], "patches": [], "activations": []}
        for image_id in refs:
            for concept in rng.choice(1000, args.concepts_per_image, replace=False):
                patches = np.sort(rng.choice(196, 12, replace=False))
                rows["concept"].append(int(concept))
                rows["image_id"].append(image_id)
                rows["patches"].append(patches.tolist())
                rows["activations"].append(rng.random(12).astype(np.float32).tolist())
        top = pa.table(rows)
        count = top.num_rows

        def crop(image):
            return np.asarray(image.convert("RGB"))

        caches = iter(range(10_000))
        project_s = best_time(
            lambda: render_thumbnails(
                top, refs, crop, (14, 14), root / f"c{next(caches)}", args.size
            ),
            args.repeats,
        )
        warm = root / "warm"
        render_thumbnails(top, refs, crop, (14, 14), warm, args.size)
        cached_s = best_time(
            lambda: render_thumbnails(top, refs, crop, (14, 14), warm, args.size), args.repeats
        )
        (root / "mpl").mkdir()
        baseline_s = best_time(
            lambda: matplotlib_thumbnails(top, refs, root / "mpl", args.size), args.repeats
        )
    report(
        {
            "stage": "browser",
            "baseline": "one matplotlib figure per thumbnail (imshow, imshow alpha, savefig)",
            "ratio": round(baseline_s / project_s, 3),
            "project_thumbnails_per_s": round(count / project_s, 1),
            "baseline_thumbnails_per_s": round(count / baseline_s, 1),
            "cached_rebuild_s": round(cached_s, 4),
            "thumbnails": count,
            "images": args.images,
            "size": args.size,
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
