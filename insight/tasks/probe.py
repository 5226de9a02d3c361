"""Interpretable classification: image-level concepts and a sparse linear probe (App. B.5).

- :func:`pool_concepts`: ``[max_p z_p ; mean_p z_p]`` over an image's patches (Eq. B.14-B.15),
  or ``max_p z_p`` alone (the authors' release; App. B.5 reports it as comparable).
- :func:`train_probe`: a linear layer (with or without bias) trained on
  ``CE + lambda * L1(W)`` (Eq. B.16) with AdamW (betas 0.9, 0.999). ``L1(W)`` is the MEAN
  absolute weight by default, the scale of the group's DN-CBM code (``nn.L1Loss()(W, 0)``)
  on which the paper's grid {0.1, 1, 2, 4, 8} spans dense to sparse; ``l1_scale="sum"`` is
  Eq. B.16 as printed (``||W||_1``), under which every lambda >= 1 empties the probe. The
  term is applied as a proximal step after every AdamW step, in Adam's own metric:
  soft-thresholding weight w by ``lr * lambda' / (sqrt(v_hat_w) + eps)`` (v_hat = Adam's
  bias-corrected second moment, lambda' = lambda / #weights for "mean"), the proximal
  operator of the preconditioned step Adam takes. So weights become exactly zero, the
  number of non-zero weights per class is meaningful, and lambda is measured against the
  gradients rather than against the step size. The checkpoint with the best held-out
  accuracy is kept.
- :func:`sweep`: the grid of batch size, learning rate and lambda; the best held-out
  accuracy wins.
- :func:`explain`: a prediction's logit as a sum of concept contributions
  ``w[class, c] * x[c]`` (plus the bias), with each one's share of the logit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

POOLINGS = ("max_mean", "max")


def pool_concepts(codes: torch.Tensor, pooling: str = "max_mean") -> torch.Tensor:
    """Eq. B.14-B.15: ``(N, m)`` patch codes of one image -> ``(2m,)`` = [max ; mean], or
    ``(m,)`` = max for ``pooling="max"``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    peak = codes.max(0).values
    return torch.cat([peak, codes.mean(0)]) if pooling == "max_mean" else peak


def select_pooling(vectors: torch.Tensor, n_concepts: int, pooling: str) -> torch.Tensor:
    """The columns of ``[max ; mean]`` vectors ``(n, 2m)`` that ``pooling`` uses."""
    if vectors.shape[1] != 2 * n_concepts:
        raise ValueError(f"expected [max ; mean] vectors of width {2 * n_concepts}")
    return vectors if pooling == "max_mean" else vectors[:, :n_concepts]


@dataclass
class Probe:
    weight: torch.Tensor  # (classes, features)
    bias: torch.Tensor  # (classes,)
    val_accuracy: float
    epoch: int
    settings: dict

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def nonzero_per_class(self) -> float:
        return float((self.weight != 0).sum(1).float().mean())


def accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean())


def train_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor | None,
    y_val: torch.Tensor | None,
    n_classes: int,
    lr: float = 1e-4,
    batch_size: int = 1024,
    l1: float = 1.0,
    epochs: int = 100,
    seed: int = 0,
    l1_scale: str = "mean",
    use_bias: bool = True,
) -> Probe:
    """Eq. B.16 with AdamW and a proximal L1 step; returns the best held-out checkpoint, or
    without held-out data (``x_val=None``) the last epoch's."""
    if l1_scale not in L1_SCALES:
        raise ValueError(f"l1_scale must be one of {L1_SCALES}, not {l1_scale!r}")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(n_classes, x_train.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=use_bias)
    parameters = [weight, bias] if use_bias else [weight]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    strength = l1 / weight.numel() if l1_scale == "mean" else l1
    best: Probe | None = None
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(x_train[idx] @ weight.T + bias, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if strength > 0:
                adam_proximal_l1(weight, optimizer, lr * strength)
        with torch.no_grad():
            val = float("nan") if x_val is None else accuracy(x_val @ weight.T + bias, y_val)
        if best is None or x_val is None or val > best.val_accuracy:
            settings = {
                "lr": lr,
                "batch_size": batch_size,
                "l1": l1,
                "l1_scale": l1_scale,
                "bias": use_bias,
                "epochs": epochs,
            }
            best = Probe(weight.detach().clone(), bias.detach().clone(), val, epoch, settings)
    assert best is not None
    return best


L1_SCALES = ("mean", "sum")


@torch.no_grad()
def adam_proximal_l1(weight: torch.Tensor, optimizer: torch.optim.Optimizer, step: float) -> None:
    """Soft-threshold ``weight`` by ``step / (sqrt(v_hat) + eps)``: the proximal operator of
    ``step / lr * ||w||_1`` in the metric of the Adam step just taken (proximal Adam)."""
    group = optimizer.param_groups[0]
    state = optimizer.state[weight]
    beta2, eps = group["betas"][1], group["eps"]
    v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
    threshold = step / (v_hat.sqrt() + eps)
    weight.copy_(weight.sign() * (weight.abs() - threshold).clamp(min=0))


def held_out_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training part and of the held-out ``fraction`` of the training set."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    return order[cut:], order[:cut]


def sweep(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    batch_sizes: list[int],
    lrs: list[float],
    l1s: list[float],
    epochs: int,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    l1_scale: str = "mean",
    use_bias: bool = True,
) -> tuple[Probe, list[dict]]:
    """Every (batch, lr, lambda) on a held-out split of the training set; the best probe."""
    train_idx, val_idx = held_out_split(len(x), holdout_fraction, seed)
    trials, best = [], None
    for batch_size, lr, l1 in itertools.product(batch_sizes, lrs, l1s):
        probe = train_probe(
            x[train_idx],
            y[train_idx],
            x[val_idx],
            y[val_idx],
            n_classes,
            lr,
            batch_size,
            l1,
            epochs,
            seed,
            l1_scale,
            use_bias,
        )
        trials.append(
            {
                **probe.settings,
                "val_accuracy": probe.val_accuracy,
                "nonzero_per_class": probe.nonzero_per_class(),
            }
        )
        if best is None or probe.val_accuracy > best.val_accuracy:
            best = probe
    assert best is not None
    return best, trials


def refit(probe: Probe, x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int = 0) -> Probe:
    """The chosen probe's settings retrained on all of ``x`` (train + validation, as the
    release does) for the epochs it needed (its best epoch + 1), keeping the last epoch;
    its ``val_accuracy`` stays the sweep's."""
    s = probe.settings
    refitted = train_probe(
        x, y, None, None, n_classes, s["lr"], s["batch_size"], s["l1"], probe.epoch + 1,
        seed, s["l1_scale"], s["bias"],
    )  # fmt: skip
    settings = {**s, "refit_epochs": probe.epoch + 1}
    return Probe(refitted.weight, refitted.bias, probe.val_accuracy, probe.epoch, settings)


def explain(probe: Probe, x: torch.Tensor, top: int = 5) -> dict:
    """The predicted class of one image and its top concept contributions with their
    share of the logit (contributions and bias sum to the logit)."""
    logits = probe.logits(x)
    predicted = int(logits.argmax())
    contributions = probe.weight[predicted] * x
    order = torch.argsort(contributions, descending=True)[:top]
    logit = float(logits[predicted])
    return {
        "class": predicted,
        "logit": logit,
        "bias": float(probe.bias[predicted]),
        "features": [int(i) for i in order],
        "contributions": [float(contributions[i]) for i in order],
        "shares": [float(contributions[i]) / logit if logit else 0.0 for i in order],
    }
