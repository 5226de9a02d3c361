"""SAE training step vs a straightforward PyTorch step.

Project: ``SAETrainer.step`` (sparse recompute of the kept pre-activations, cumulative
Matryoshka decoding, exact BatchTopK from per-row candidates). Baseline:
``insight.sae_reference.reference_step`` (dense codes, one dense decode per prefix).
Both start from the same weights and batch; the JSON line reports samples/s of both,
their ratio (target >= 3) and the largest difference of the updated weights.

    python benchmarks/sae.py [--d 512 --m 8192 --k 12 --batch 4096 --device cpu]
"""

from __future__ import annotations

import copy

import torch
from _common import best_time, cuda_sync, machine, report
from _common import parser as benchmark_parser

from insight.core.runtime import resolve_device
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, matryoshka_group_sizes
from insight.sae.reference import reference_step
from insight.sae.trainer import SAETrainer, TrainConfig


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = SAEConfig(
        d_in=args.d, d_sae=args.m, k=args.k, group_sizes=matryoshka_group_sizes(args.m)
    )
    batch = torch.randn(args.batch, args.d, device=device) * 2 + 0.5
    sync = cuda_sync(device)

    project_sae = MatryoshkaBatchTopKSAE(config).to(device)
    baseline_sae = copy.deepcopy(project_sae)
    trainer = SAETrainer(  # b_dec stays where the baseline's is: this times the step alone
        project_sae,
        TrainConfig(lr=1e-4, batch_size=args.batch, b_dec_init="zeros"),
        data=None,
        device=device,
    )
    optimizer = torch.optim.Adam(baseline_sae.parameters(), lr=1e-4)

    # same results: one step from identical states gives the same loss and weights
    project_loss = float(trainer.step(batch)["loss"])
    baseline_loss = reference_step(baseline_sae, optimizer, batch)
    weight_diff = max(
        (a - b).abs().max().item()
        for a, b in zip(project_sae.parameters(), baseline_sae.parameters(), strict=True)
    )

    def project() -> None:
        for _ in range(args.steps):
            trainer.step(batch)

    def baseline() -> None:
        for _ in range(args.steps):
            reference_step(baseline_sae, optimizer, batch)

    project_s = best_time(project, args.repeats, sync)
    baseline_s = best_time(baseline, args.repeats, sync)
    project_rate = args.steps * args.batch / project_s
    baseline_rate = args.steps * args.batch / baseline_s
    print(f"project {project_rate:.0f} samples/s, baseline {baseline_rate:.0f} samples/s")
    report(
        {
            "stage": "sae",
            "baseline": "straightforward PyTorch Matryoshka BatchTopK step (dense decode per prefix)",
            "device": str(device),
            "d": args.d,
            "m": args.m,
            "k": args.k,
            "batch": args.batch,
            "ratio": round(project_rate / baseline_rate, 3),
            "project_samples_per_s": round(project_rate, 1),
            "baseline_samples_per_s": round(baseline_rate, 1),
            "first_step_loss": [round(project_loss, 6), round(baseline_loss, 6)],
            "max_weight_difference_after_one_step": weight_diff,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
