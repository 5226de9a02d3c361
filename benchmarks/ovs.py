"""OVS evaluation vs the bare backbone forward over the same windows.

Project: ``insight.ovs.evaluate`` on generated VOC-layout images (protocol resize,
sliding windows, DINOised features, three methods, upsampling, argmax, IoU).
Baseline: open_clip ``encode_image`` on exactly the windows the evaluation cuts, with a
ViT-B-16 built for the 448-pixel window (random weights, same cost). ``ratio`` = project images/s / baseline images/s.

    python benchmarks/ovs.py [--images 4 --device cpu]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import best_time, cuda_sync, machine, report
from _common import parser as benchmark_parser
from PIL import Image

from insight.core.runtime import resolve_device
from insight.data.batches import BatchTransform
from insight.data.benchmarks import DATASETS, list_pairs
from insight.demo.layouts import make_voc_dataset
from insight.models.backbone import BackboneSpec, load_clip, open_clip_models
from insight.models.dense import DenseEncoder
from insight.models.dinoiser import DINOiser
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, matryoshka_group_sizes
from insight.tasks.ovs import OVSConfig, evaluate
from insight.tasks.segmentation import resize_to_protocol, slide_inference


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()

    device = resolve_device(args.device)
    model, preprocess, _ = load_clip(BackboneSpec(args.model, pretrained=None), device)
    d = model.visual.output_dim
    encoder = DenseEncoder(model.visual, DINOiser(d, 64).to(device)).eval()
    transform = BatchTransform(preprocess)
    sae = MatryoshkaBatchTopKSAE(
        SAEConfig(d_in=d, d_sae=8192, k=12, group_sizes=matryoshka_group_sizes(8192))
    ).to(device)
    sae.threshold.fill_(0.1)
    dataset = DATASETS["voc"]
    text = torch.nn.functional.normalize(torch.randn(dataset.num_classes, d, device=device), dim=-1)
    config = OVSConfig()
    sync = cuda_sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        make_voc_dataset(Path(tmp), args.images, size=(500, 375))
        pairs = list_pairs(dataset, tmp)
        windows = []

        def record(crop: torch.Tensor) -> torch.Tensor:
            windows.append(crop.clone())
            return crop.new_zeros((1, 1, *crop.shape[-2:]))

        for _, image_path, _ in pairs:  # the windows the evaluation will cut
            pixels = torch.from_numpy(np.array(Image.open(image_path).convert("RGB")))[None]
            slide_inference(resize_to_protocol(transform.batch(pixels, device)), record, 1)

        def project() -> None:
            evaluate(pairs, dataset, encoder, transform, text, sae, config, device)

        # open_clip's encode_image needs a model built for the window size (the evaluation
        # interpolates the positional embedding instead): same architecture, same cost
        bare = (
            open_clip_models()
            .create_model(args.model, force_image_size=config.window, device=device)
            .eval()
        )

        @torch.no_grad()
        def baseline() -> None:
            for window in windows:
                bare.encode_image(window)

        project()
        project_s = best_time(project, args.repeats, sync)
        baseline_s = best_time(baseline, args.repeats, sync)
    print(
        f"project {args.images / project_s:.2f} img/s, baseline {args.images / baseline_s:.2f} img/s"
    )
    report(
        {
            "stage": "ovs",
            "baseline": f"open_clip {args.model} encode_image on the same {len(windows)} windows",
            "device": str(device),
            "images": args.images,
            "windows": len(windows),
            "image_size": [500, 375],
            "ratio": round(baseline_s / project_s, 3),
            "project_images_per_s": round(args.images / project_s, 3),
            "baseline_images_per_s": round(args.images / baseline_s, 3),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
