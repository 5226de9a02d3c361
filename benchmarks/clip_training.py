"""Demo CLIP training (rule train_clip) vs open_clip's usual per-epoch data pipeline.

Project: what the rule runs (``insight.pipeline.train_clip_from_pairs``): every image
decoded and resized once into a uint8 tensor, then ``epochs`` epochs of open_clip's
model and ``ClipLoss`` on normalised batches. Baseline: the same model, loss, optimiser
and steps, fed the way open_clip's training script feeds a CSV dataset: each epoch
opens every JPEG and applies the model's ``preprocess`` transform per image. The JSON
line reports pairs/s over the whole run (decoding included) and their ratio; one
untimed baseline run warms up first, then the best of ``--repeats`` runs counts.

    python benchmarks/clip_training.py [--pairs 256 --epochs 3 --batch 64]
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

from insight.demo.clip_training import train_clip_from_pairs
from insight.demo.layouts import make_clip_pairs
from insight.models.backbone import BackboneSpec, load_clip


def baseline_training(csv: Path, spec: BackboneSpec, epochs: int, batch: int, lr: float) -> None:
    table = pcsv.read_csv(csv)
    paths = [csv.parent / p for p in table["path"].to_pylist()]
    model, preprocess, tokenizer = load_clip(spec)
    model.train().requires_grad_(True)
    tokens_all = tokenizer(table["caption"].to_pylist())
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
            image_features, text_features, scale = model(torch.stack(images), tokens_all[rows])[:3]
            loss = loss_fn(image_features, text_features, scale)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--pairs", type=int, default=256, help="image/caption pairs (even)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", default="insight-tiny-ViT-B-16")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = BackboneSpec(model=args.model, pretrained=None)
    cfg = {"epochs": args.epochs, "batch_size": args.batch, "lr": 2e-3, "warmup_steps": 5}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = make_clip_pairs(Path(tmp) / "pairs", args.pairs // 2)

        def project() -> None:
            out = Path(tmp) / "clip.safetensors"
            runs.append(train_clip_from_pairs(csv, spec, cfg, out, torch.device("cpu")))

        def baseline() -> None:
            baseline_training(csv, spec, args.epochs, args.batch, cfg["lr"])

        baseline()  # warm up kernels, allocator and file cache for whichever runs first
        baseline_s = best_time(baseline, args.repeats)
        project_s = best_time(project, args.repeats)
    metrics = runs[-1]
    trained = args.epochs * (args.pairs // args.batch) * args.batch
    project_rate, baseline_rate = trained / project_s, trained / baseline_s
    print(f"project {project_rate:.1f} pairs/s, baseline {baseline_rate:.1f} pairs/s")
    report(
        {
            "stage": "clip_training",
            "baseline": "same open_clip model, ClipLoss and AdamW, JPEG decode + preprocess per image every epoch",
            "model": args.model,
            "pairs": args.pairs,
            "epochs": args.epochs,
            "batch": args.batch,
            "ratio": round(project_rate / baseline_rate, 3),
            "project_pairs_per_s": round(project_rate, 1),
            "baseline_pairs_per_s": round(baseline_rate, 1),
            "final_loss": round(metrics["loss_per_epoch"][-1], 4),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
