"""Feature extraction vs the bare open_clip forward.

Project: ``extract_shard`` on JPEG files (decode + MaskCLIP forward + DINOise + Parquet
write). Baseline: ``model.encode_image`` on the same images, already decoded, with the
same batch size. ViT-B-16 architecture with random weights (no download). The last line
is a JSON object; ``ratio`` = project images/s / baseline images/s (target >= 0.85 fp32).
The bf16 pair is measured only where the device has native bf16; elsewhere the JSON says
why it was skipped (``bf16_skipped``).

    python benchmarks/features.py [--images 64 --batch-size 16 --device cpu]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import best_time, cuda_sync, machine, report
from _common import parser as benchmark_parser

from insight.core.runtime import DTYPES, bf16_unsupported_reason, resolve_device
from insight.data.batches import BatchTransform
from insight.data.images import decode_image, list_images
from insight.demo.layouts import make_scene_images
from insight.features.extract import ExtractConfig, extract_shard
from insight.models.backbone import BackboneSpec, load_clip
from insight.models.dense import DenseEncoder
from insight.models.dinoiser import DINOiser


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(500, 375),
        help="generated JPEG size (ImageNet-like)",
    )
    parser.add_argument("--decode-threads", type=int, default=2)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model, preprocess, _ = load_clip(BackboneSpec(args.model, pretrained=None), device)
    dinoiser = DINOiser(model.visual.output_dim, 64).to(device)
    sync = cuda_sync(device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_scene_images(tmp / "images", args.images, size=tuple(args.image_size))
        refs = list_images(tmp / "images", "folder")
        decoded = torch.stack(
            [preprocess(decode_image(Path(r.path).read_bytes())[0]) for r in refs]
        )
        batches = list(decoded.split(args.batch_size))

        config = ExtractConfig(batch_size=args.batch_size, decode_threads=args.decode_threads)
        results = {}
        bf16_skipped = bf16_unsupported_reason(device)
        if bf16_skipped:
            print(f"bf16 skipped: {bf16_skipped}")
        for precision in ("fp32",) if bf16_skipped else ("fp32", "bf16"):
            # both sides run with weights in the same dtype
            model = model.to(DTYPES[precision])
            encoder = DenseEncoder(model.visual, dinoiser, precision=precision).eval()

            def baseline(precision: str = precision, model: torch.nn.Module = model) -> None:
                with torch.no_grad():
                    for batch in batches:
                        model.encode_image(batch.to(device, DTYPES[precision]))

            def project(encoder: DenseEncoder = encoder) -> None:
                extract_shard(
                    encoder,
                    BatchTransform(preprocess),
                    refs,
                    tmp / "shard.parquet",
                    tmp / "rejected.parquet",
                    args.model,
                    config,
                    device,
                )

            baseline()  # warm up kernels and caches
            project()
            base_s = best_time(baseline, args.repeats, sync)
            proj_s = best_time(project, args.repeats, sync)
            results[precision] = (args.images / base_s, args.images / proj_s)
            print(
                f"{precision}: baseline {results[precision][0]:.2f} img/s, project {results[precision][1]:.2f} img/s"
            )

    base32, proj32 = results["fp32"]
    if bf16_skipped:
        bf16 = {"bf16_skipped": bf16_skipped}
    else:
        base16, proj16 = results["bf16"]
        bf16 = {
            "bf16_ratio": round(proj16 / base16, 3),
            "bf16_project_images_per_s": round(proj16, 2),
            "bf16_speedup_over_fp32_project": round(proj16 / proj32, 3),
        }
    report(
        {
            "stage": "features",
            "baseline": f"open_clip {args.model} encode_image on decoded tensors",
            "model": args.model,
            "device": str(device),
            "images": args.images,
            "batch_size": args.batch_size,
            "image_size": list(args.image_size),
            "ratio": round(proj32 / base32, 3),
            "baseline_images_per_s": round(base32, 2),
            "project_images_per_s": round(proj32, 2),
            **bf16,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
