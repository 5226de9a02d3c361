"""Vocabulary text encoding vs open_clip ``encode_text``.

Project: ``TextEncoder`` (prompts sorted by length, context cut to the longest prompt of
each batch) on the template prompts of a vocabulary; baseline: ``model.encode_text`` on
the same prompts with the full 77-token context, same batch size. ViT-B-16 text tower,
random weights. Also checks that both give the same embeddings (max abs difference) and
times the cached second pass.

    python benchmarks/text_embedding.py [--terms 20 --batch-size 256 --device cpu]
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from _common import best_time, cuda_sync, machine, report
from _common import parser as benchmark_parser

from insight.core.runtime import resolve_device
from insight.models.backbone import BackboneSpec, load_clip
from insight.models.prompts import RELEASE_TEMPLATES
from insight.models.text import EmbeddingCache, TextEncoder
from insight.naming.vocabulary import wordfreq_terms


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--terms", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    device = resolve_device(args.device)
    model, _, tokenizer = load_clip(BackboneSpec(args.model, pretrained=None), device)
    terms = wordfreq_terms(args.terms)
    prompts = [
        template.format(term)
        for term in terms
        for templates in RELEASE_TEMPLATES.values()
        for template in templates
    ]
    sync = cuda_sync(device)
    encoder = TextEncoder(model, tokenizer, args.model, device, batch_size=args.batch_size)

    @torch.no_grad()
    def baseline() -> np.ndarray:
        out = []
        for start in range(0, len(prompts), args.batch_size):
            out.append(
                model.encode_text(tokenizer(prompts[start : start + args.batch_size]).to(device))
                .float()
                .cpu()
            )
        return torch.cat(out).numpy()

    ours, theirs = encoder.encode(prompts), baseline()
    max_diff = float(np.abs(ours - theirs).max())
    project_s = best_time(lambda: encoder.encode(prompts), args.repeats, sync)
    baseline_s = best_time(baseline, args.repeats, sync)
    with tempfile.TemporaryDirectory() as tmp:
        cached = TextEncoder(
            model,
            tokenizer,
            args.model,
            device,
            batch_size=args.batch_size,
            cache=EmbeddingCache(tmp, args.model),
        )
        cached.encode(prompts)
        cached_s = best_time(lambda: cached.encode(prompts), 1, sync)
    print(
        f"project {len(prompts) / project_s:.0f} prompts/s, baseline {len(prompts) / baseline_s:.0f} prompts/s"
    )
    report(
        {
            "stage": "text_embedding",
            "baseline": f"open_clip {args.model} encode_text, full 77-token context",
            "device": str(device),
            "terms": len(terms),
            "prompts": len(prompts),
            "batch_size": args.batch_size,
            "ratio": round(baseline_s / project_s, 3),
            "project_prompts_per_s": round(len(prompts) / project_s, 1),
            "baseline_prompts_per_s": round(len(prompts) / baseline_s, 1),
            "project_terms_per_s": round(len(terms) / project_s, 1),
            "cached_second_pass_s": round(cached_s, 3),
            "max_abs_difference": max_diff,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
