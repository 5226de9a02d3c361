"""Captioning through the concept bottleneck (Sec. 4.3, Fig. 6, App. B.6; ClipCap).

- :func:`pool_tokens`: the 14x14 patch tokens average-pooled to 8x8 (adaptive pooling:
  output cell i covers input rows ``floor(14 i / 8)`` to ``ceil(14 (i + 1) / 8)``).
- :class:`PrefixAdapter`: 8 transformer layers over [projected tokens ; 10 learnable
  queries]; the queries' outputs are GPT-2's prefix (ClipCap's transformer mapper).
- :class:`Captioner`: the adapter plus a GPT-2 language model (Hugging Face), trained
  with next-token cross-entropy on the caption after the prefix.
- INSIGHT's tokens are the SAE reconstruction of the thresholded codes (batch
  independent); the baseline's are the DINOised backbone tokens themselves. Average
  pooling is linear and the reconstruction affine, so the pooled reconstruction equals
  ``pool(z) W_dec + b_dec``: scaling a concept by ``s`` moves every pooled token by
  exactly ``(s - 1) pool(z_c) W_dec[c]`` (:func:`insight.views.steering.scale_concepts`).
- Checkpoint choice (App. B.6: "over the validation set"): the epoch with the lowest
  validation loss; metrics (BLEU-4, CIDEr, METEOR) on the test split with
  ``pycocoevalcap`` after its PTB tokenisation (METEOR and the tokeniser need Java).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from insight.core.logs import progress
from insight.core.sections import CaptioningSettings

POOLED_GRID = (8, 8)


def pool_tokens(
    tokens: torch.Tensor, grid: tuple[int, int], out: tuple[int, int] = POOLED_GRID
) -> torch.Tensor:
    """``(B, h*w, d)`` patch tokens (row-major) -> ``(B, out_h*out_w, d)`` (adaptive mean)."""
    batch, _, dim = tokens.shape
    image = tokens.transpose(1, 2).reshape(batch, dim, *grid)
    return F.adaptive_avg_pool2d(image, out).flatten(2).transpose(1, 2)


class PrefixAdapter(nn.Module):
    """Pooled vision tokens ``(B, T, d_in)`` -> GPT-2 prefix ``(B, queries, d_model)``."""

    def __init__(
        self,
        d_in: int,
        d_model: int,
        n_tokens: int = POOLED_GRID[0] * POOLED_GRID[1],
        queries: int = 10,
        layers: int = 8,
        heads: int = 8,
    ):
        super().__init__()
        self.project = nn.Linear(d_in, d_model)
        self.position = nn.Parameter(torch.zeros(n_tokens, d_model))
        self.queries = nn.Parameter(torch.randn(queries, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.project(tokens) + self.position
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        return self.transformer(torch.cat([x, queries], dim=1))[:, -self.queries.shape[0] :]


class Captioner(nn.Module):
    """Adapter + GPT-2: ``loss`` for training, ``generate`` for greedy captions."""

    def __init__(self, adapter: PrefixAdapter, language_model: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.language_model = language_model

    def loss(
        self, tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean next-token cross-entropy of the captions given the prefix."""
        prefix = self.adapter(tokens)
        words = self.language_model.get_input_embeddings()(input_ids)
        embeds = torch.cat([prefix, words], dim=1)
        ones = torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=prefix.device)
        ignore = torch.full(prefix.shape[:2], -100, dtype=input_ids.dtype, device=prefix.device)
        labels = torch.cat([ignore, input_ids.masked_fill(attention_mask == 0, -100)], dim=1)
        out = self.language_model(
            inputs_embeds=embeds, attention_mask=torch.cat([ones, attention_mask], 1), labels=labels
        )
        return out.loss

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, tokenizer, max_new_tokens: int = 20) -> list[str]:
        """Greedy captions of a batch of pooled tokens."""
        prefix = self.adapter(tokens)
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        ids = self.language_model.generate(
            inputs_embeds=prefix,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def load_language_model(name_or_path: str):
    """GPT-2 and its tokenizer by Hugging Face name (``gpt2``) or local folder; the tokenizer
    gets a pad token (GPT-2 has none) equal to EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except OSError as err:
        raise FileNotFoundError(
            f"language model {name_or_path!r} not found: download it (e.g. "
            f"`huggingface-cli download gpt2 --local-dir models/gpt2`) and set "
            f"captioning.language_model to the folder ({err})"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _encode_captions(tokenizer, captions: Sequence[str], max_length: int, device):
    batch = tokenizer(
        [c + tokenizer.eos_token for c in captions],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def _pairs(captions: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """One (image index, caption) pair per reference caption."""
    index = [i for i, refs in enumerate(captions) for _ in refs]
    return np.array(index, dtype=np.int64), [c for refs in captions for c in refs]


@torch.no_grad()
def validation_loss(
    captioner: Captioner,
    tokens: torch.Tensor,
    captions,
    tokenizer,
    settings: CaptioningSettings,
    device,
) -> float:
    captioner.eval()
    index, texts = _pairs(captions)
    total, count = 0.0, 0
    for start in range(0, len(texts), settings.batch_size):
        chosen = index[start : start + settings.batch_size]
        ids, mask = _encode_captions(
            tokenizer, texts[start : start + len(chosen)], settings.max_length, device
        )
        loss = captioner.loss(tokens[chosen].to(device), ids, mask)
        total, count = total + float(loss) * len(chosen), count + len(chosen)
    return total / max(count, 1)


def train_captioner(
    captioner: Captioner,
    train_tokens: torch.Tensor,
    train_captions: Sequence[Sequence[str]],
    val_tokens: torch.Tensor,
    val_captions: Sequence[Sequence[str]],
    tokenizer,
    settings: CaptioningSettings,
    device: torch.device | str = "cpu",
) -> tuple[Captioner, list[dict]]:
    """AdamW on the adapter and GPT-2 (backbone and SAE are frozen upstream: the tokens
    are cached), linear warm-up, one (image, caption) pair per reference caption, shuffled
    each epoch; returns the captioner at the epoch with the lowest validation loss and the
    per-epoch history."""
    generator = torch.Generator().manual_seed(settings.seed)
    captioner.to(device)
    optimiser = torch.optim.AdamW(captioner.parameters(), lr=settings.lr)
    index, texts = _pairs(train_captions)
    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    warmup = min(settings.warmup_steps, steps_per_epoch * settings.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / max(warmup, 1))
    )
    best, best_loss, history = None, math.inf, []
    bar = progress(steps_per_epoch * settings.epochs, "captioner", "step")
    for epoch in range(settings.epochs):
        captioner.train()
        order = torch.randperm(len(texts), generator=generator).numpy()
        running = 0.0
        for start in range(0, len(texts), settings.batch_size):
            chosen = order[start : start + settings.batch_size]
            ids, mask = _encode_captions(
                tokenizer, [texts[i] for i in chosen], settings.max_length, device
            )
            loss = captioner.loss(train_tokens[index[chosen]].to(device), ids, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += float(loss.detach()) * len(chosen)
            bar.update(1)
        val = validation_loss(captioner, val_tokens, val_captions, tokenizer, settings, device)
        history.append({"epoch": epoch + 1, "train_loss": running / len(texts), "val_loss": val})
        if val < best_loss:
            best, best_loss = copy.deepcopy(captioner.state_dict()), val
    bar.close()
    captioner.load_state_dict(best)
    return captioner.eval(), history


def generate_captions(
    captioner: Captioner, tokens: torch.Tensor, tokenizer, settings: CaptioningSettings, device
) -> list[str]:
    captions = []
    for start in range(0, len(tokens), settings.batch_size):
        batch = tokens[start : start + settings.batch_size].to(device)
        captions += captioner.generate(batch, tokenizer, settings.max_new_tokens)
    return captions


def caption_metrics(references: dict[str, list[str]], predictions: dict[str, str]) -> dict:
    """BLEU-4, CIDEr and METEOR (pycocoevalcap, the COCO caption evaluation code) after its
    PTB tokenisation; corpus-level BLEU as the COCO server reports it."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    meteor, _ = Meteor().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider), "meteor": float(meteor)}
