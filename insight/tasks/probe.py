"""Interpretable classification: image-level concepts and a sparse linear probe (App. B.5).

- :func:`pool_concepts`: ``[max_p z_p ; mean_p z_p]`` over an image's patches (Eq. B.14-B.15).
- :func:`train_probe`: a linear layer trained on ``CE + lambda * ||W||_1`` (Eq. B.16) with
  AdamW (betas 0.9, 0.999). The L1 term is applied as a proximal step after every AdamW
  step (soft-thresholding by ``lr * lambda``), so weights become exactly zero and the
  number of non-zero weights per class is meaningful. The checkpoint with the best
  held-out accuracy is kept.
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


def pool_concepts(codes: torch.Tensor) -> torch.Tensor:
    """Eq. B.14-B.15: ``(N, m)`` patch codes of one image -> ``(2m,)`` = [max ; mean]."""
    return torch.cat([codes.max(0).values, codes.mean(0)])


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
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    n_classes: int,
    lr: float = 1e-4,
    batch_size: int = 1024,
    l1: float = 1.0,
    epochs: int = 100,
    seed: int = 0,
) -> Probe:
    """Eq. B.16 with AdamW and a proximal L1 step; returns the best held-out checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(n_classes, x_train.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    best: Probe | None = None
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(x_train[idx] @ weight.T + bias, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # proximal step of lambda * ||W||_1
                weight.copy_(weight.sign() * (weight.abs() - lr * l1).clamp(min=0))
        with torch.no_grad():
            val = accuracy(x_val @ weight.T + bias, y_val)
        if best is None or val > best.val_accuracy:
            settings = {"lr": lr, "batch_size": batch_size, "l1": l1, "epochs": epochs}
            best = Probe(weight.detach().clone(), bias.detach().clone(), val, epoch, settings)
    assert best is not None
    return best


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
