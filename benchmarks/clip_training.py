"""Demo CLIP training (rule train_clip) vs open_clip's usual per-epoch data pipeline.

Project: what the rule runs (``insight.pipeline.train_clip_from_pairs``): every image
decoded and resized once into a uint8 tensor, then ``epochs`` epochs of open_clip's
model and ``ClipLoss`` on normalised batches. Baseline: the same model, loss, optimiser
and steps, fed the way open_clip's training script feeds a CSV dataset: each epoch
opens every JPEG and applies the model's ``preprocess`` transform per image. The JSON
line reports pairs/s over the whole run (decoding included) and their ratio; one
untimed baseline run warms up first, then the best of ``--repeats`` runs counts.

With ``--region-weight`` above 0 both add the demo's region-text loss
(``insight.demo.clip_training.region_loss`` on MaskCLIP patch features, targets from each
pair's region map). The project reads the tokens entering the last block from the
contrastive forward pass; the baseline computes the features the usual way, a second
pass of the visual tower (``maskclip_features``), and reads each region map PNG per step.

    python benchmarks/clip_training.py [--pairs 256 --epochs 3 --batch 64 --region-weight 4]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import open_clip
import pyarrow.csv as pcsv
import torch
from _common import best_time, machine, report
from _common import parser as benchmark_parser
from PIL import Image

from insight.demo.clip_training import (
    REGION_TEMPLATE,
    region_loss,
    region_maps_to_tensor,
    region_targets,
    train_clip_from_pairs,
)
from insight.demo.layouts import make_clip_pairs
from insight.demo.world import REGION_WORDS
from insight.models.backbone import BackboneSpec, load_clip, maskclip_features


def baseline_training(
    csv: Path, spec: BackboneSpec, epochs: int, batch: int, lr: float, region_weight: float = 0.0
) -> None:
    table = pcsv.read_csv(csv)
    paths = [csv.parent / p for p in table["path"].to_pylist()]
    region_paths = [csv.parent / p for p in table["regions"].to_pylist()]
    model, preprocess, tokenizer = load_clip(spec)
    model.train().requires_grad_(True)
    tokens_all = tokenizer(table["caption"].to_pylist())
    word_tokens = tokenizer([REGION_TEMPLATE.format(w) for w in REGION_WORDS])
    size, grid = model.visual.image_size[0], tuple(model.visual.grid_size)
    loss_fn = open_clip.ClipLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(paths), generator=generator)
        for step in range(len(paths) // batch):
            rows = order[step * batch : (step + 1) * batch]
            images = []
            for row in rows.tolist():
                with Image.open(paths[row]) as image:
                    images.append(preprocess(image.convert("RGB")))
            pixels = torch.stack(images)
            image_features, text_features, scale = model(pixels, tokens_all[rows])[:3]
            loss = loss_fn(image_features, text_features, scale)
            if region_weight > 0:
                maps = region_maps_to_tensor([region_paths[r] for r in rows.tolist()], size)
                words = torch.nn.functional.normalize(model.encode_text(word_tokens), dim=-1)
                dense = maskclip_features(model.visual, pixels)  # a second pass
                targets = region_targets(maps, grid)
                loss = loss + region_weight * region_loss(dense, targets, words, scale)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--pairs", type=int, default=256, help="image/caption pairs (even)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", default="insight-tiny-ViT-B-16")
    parser.add_argument(
        "--region-weight", type=float, default=0.0, help="the demo's region-text loss (0: off)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = BackboneSpec(model=args.model, pretrained=None)
    cfg = {
        "epochs": args.epochs,
        "batch_size": args.batch,
        "lr": 2e-3,
        "warmup_steps": 5,
        "region_weight": args.region_weight,
    }
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = make_clip_pairs(Path(tmp) / "pairs", args.pairs // 2)

        def project() -> None:
            out = Path(tmp) / "clip.safetensors"
            runs.append(train_clip_from_pairs(csv, spec, cfg, out, torch.device("cpu")))

        def baseline() -> None:
            baseline_training(csv, spec, args.epochs, args.batch, cfg["lr"], args.region_weight)

        baseline()  # warm up kernels, allocator and file cache for whichever runs first
        baseline_s = best_time(baseline, args.repeats)
        project_s = best_time(project, args.repeats)
    metrics = runs[-1]
    trained = args.epochs * (args.pairs // args.batch) * args.batch
    project_rate, baseline_rate = trained / project_s, trained / baseline_s
    print(f"project {project_rate:.1f} pairs/s, baseline {baseline_rate:.1f} pairs/s")
    baseline_name = (
        "same open_clip model, ClipLoss and AdamW, JPEG decode + preprocess per image every epoch"
    )
    if args.region_weight > 0:
        baseline_name += "; the region loss on a second MaskCLIP pass, region maps read per step"
    report(
        {
            "stage": "clip_training",
            "baseline": baseline_name,
            "model": args.model,
            "pairs": args.pairs,
            "epochs": args.epochs,
            "batch": args.batch,
            "ratio": round(project_rate / baseline_rate, 3),
            "project_pairs_per_s": round(project_rate, 1),
            "baseline_pairs_per_s": round(baseline_rate, 1),
            "region_weight": args.region_weight,
            "final_loss": round(metrics["loss_per_epoch"][-1], 4),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
