"""Caption generation vs ClipCap's greedy loop (App. B.6).

Project: ``Captioner.generate`` (Hugging Face ``generate`` on the prefix embeddings, with
the key/value cache). Baseline: ClipCap's reference greedy decoding, which runs GPT-2
over the whole prefix-plus-caption sequence again for every new token (no cache).
Paper sizes with random weights: pooled 8x8 tokens of d=512, an 8-layer adapter with
10 queries, GPT-2 small (12 layers, 768 wide); EOS is never produced, so both emit
exactly ``--tokens`` tokens. Also checks that both produce the same token ids.

    python benchmarks/captioning.py [--images 16 --tokens 20 --device cpu]
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from _common import best_time, cuda_sync, machine, report
from _common import parser as benchmark_parser
from transformers import GPT2Config, GPT2LMHeadModel

from insight.core.runtime import resolve_device
from insight.tasks.captioner import Captioner, PrefixAdapter


@torch.no_grad()
def clipcap_greedy(captioner: Captioner, tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """ClipCap's loop: the full sequence through GPT-2 at every step, argmax of the last."""
    embeds = captioner.adapter(tokens)
    table = captioner.language_model.get_input_embeddings()
    generated = []
    for _ in range(steps):
        logits = captioner.language_model(inputs_embeds=embeds).logits[:, -1]
        following = logits.argmax(-1)
        generated.append(following)
        embeds = torch.cat([embeds, table(following)[:, None]], dim=1)
    return torch.stack(generated, dim=1)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    language_model = GPT2LMHeadModel(GPT2Config())
    # an EOS id no logit will reach, so both methods emit exactly --tokens tokens
    language_model.config.eos_token_id = None
    captioner = Captioner(PrefixAdapter(512, 768), language_model).to(device).eval()
    tokens = torch.randn(args.images, 64, 512, device=device)
    ids: dict[str, torch.Tensor] = {}

    def decode(ids_out):
        ids["project"] = ids_out
        return [""] * len(ids_out)

    tokenizer = SimpleNamespace(
        eos_token_id=None, pad_token_id=0, batch_decode=lambda i, **_: decode(i)
    )

    def project():
        captioner.generate(tokens, tokenizer, args.tokens)

    def baseline():
        ids["baseline"] = clipcap_greedy(captioner, tokens, args.tokens)

    sync = cuda_sync(device)
    project_s = best_time(project, args.repeats, sync)
    baseline_s = best_time(baseline, args.repeats, sync)
    same = bool(torch.equal(ids["project"][:, -args.tokens :], ids["baseline"]))
    report(
        {
            "stage": "captioning",
            "baseline": "ClipCap greedy loop without key/value cache (GPT-2 small)",
            "ratio": round(baseline_s / project_s, 3),
            "project_captions_per_s": round(args.images / project_s, 2),
            "baseline_captions_per_s": round(args.images / baseline_s, 2),
            "images": args.images,
            "tokens": args.tokens,
            "same_token_ids": same,
            "device": str(device),
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
