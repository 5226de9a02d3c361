"""The SAE's inference threshold: batch-independent codes that match BatchTopK's sparsity.

BatchTopK (Eq. B.4) depends on the batch, so downstream stages use ``z = z_pre *
1[z_pre > theta]``. Three readings of theta, selected by ``sae.inference_threshold``:

- ``ema``: the training-time EMA of the smallest activation BatchTopK kept in each batch
  (Bussmann et al.; the authors' release, one global value). It lags the model: on the
  demo the cutoff falls during training and the EMA ends ~60% above the final model's
  cutoff, so held-out L0 is about 9 against BatchTopK's 12.
- ``global`` (default): one value, recalibrated after training with the final model: the
  mean over calibration batches of BatchTopK's cutoff (the EMA's estimator without the lag).

The calibration batches are training rows, or with ``sae.calibration_fraction`` > 0 a split
of images the SAE never trained on. The release's EMA sees each batch before training on
it (one pass over CC12M); many epochs over few images instead let the SAE memorise them,
and a cutoff read off memorised patches is too low for new ones.
- ``per_concept`` (App. B.5: "the threshold per concept is set to match the BatchTopK
  sparsity"): theta_c such that concept c fires on as many calibration patches under the
  threshold as under BatchTopK, read off a per-concept histogram of its pre-activations
  (``bins`` bins up to its maximum, linearly interpolated). A concept BatchTopK never kept
  gets +inf (it never fires).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from insight.sae.model import MatryoshkaBatchTopKSAE, batch_topk_indices, fires

THRESHOLD_MODES = ("global", "per_concept", "ema")


@torch.no_grad()
def batch_cutoff(sae: MatryoshkaBatchTopKSAE, x: torch.Tensor) -> float | None:
    """The smallest positive activation BatchTopK keeps in batch ``x`` (None if none)."""
    values, _ = batch_topk_indices(sae.pre_activations(x), x.shape[0] * sae.config.k)
    positive = values[values > 0]
    return float(positive.min()) if positive.numel() else None


@torch.no_grad()
def global_threshold(sae: MatryoshkaBatchTopKSAE, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean BatchTopK cutoff of the final model over ``batches`` (a scalar tensor)."""
    cutoffs = [c for c in (batch_cutoff(sae, x) for x in batches) if c is not None]
    if not cutoffs:
        raise ValueError("no calibration batch kept a positive activation")
    return torch.tensor(sum(cutoffs) / len(cutoffs))


@torch.no_grad()
def per_concept_thresholds(
    sae: MatryoshkaBatchTopKSAE, batches: Iterable[torch.Tensor], bins: int = 512
) -> torch.Tensor:
    """theta (m,) matching each concept's BatchTopK frequency on ``batches`` (two passes, so
    ``batches`` must be re-iterable, e.g. a list)."""
    m = sae.config.d_sae
    kept = torch.zeros(m, dtype=torch.float64)
    peak = torch.zeros(m)
    for x in batches:  # BatchTopK's count per concept (kept and positive) and its peak
        pre = sae.pre_activations(x)
        values, flat = batch_topk_indices(pre, x.shape[0] * sae.config.k)
        kept += torch.bincount(flat[values > 0] % m, minlength=m).double().cpu()
        peak = torch.maximum(peak, pre.max(0).values.cpu())
    width = (peak / bins).clamp(min=1e-12)
    counts = torch.zeros(m, bins, dtype=torch.float64)
    for x in batches:
        pre = sae.pre_activations(x).cpu()
        rows, cols = torch.nonzero(pre > 0, as_tuple=True)
        index = (pre[rows, cols] / width[cols]).long().clamp(max=bins - 1)
        counts.view(-1).index_add_(
            0, cols * bins + index, torch.ones(len(cols), dtype=torch.float64)
        )
    # above[c, b]: patches of c whose activation lies in bin b or higher
    above = counts.flip(1).cumsum(1).flip(1)
    thresholds = torch.full((m,), float("inf"))
    for c in torch.nonzero(kept > 0).flatten().tolist():
        target = kept[c]
        b = int((above[c] >= target).nonzero().max())  # the highest bin reaching the count
        higher = above[c, b + 1] if b + 1 < bins else 0.0
        inside = counts[c, b]
        share = float((target - higher) / inside) if inside > 0 else 1.0
        thresholds[c] = (b + 1 - share) * width[c]  # interpolate within bin b
    return thresholds


def calibrated_threshold(
    sae: MatryoshkaBatchTopKSAE, batches: list[torch.Tensor], mode: str
) -> torch.Tensor:
    """The threshold of ``mode`` (:data:`THRESHOLD_MODES`) for the trained ``sae``."""
    if mode == "ema":
        return sae.threshold.detach().clone()
    if mode == "global":
        return global_threshold(sae, batches)
    if mode == "per_concept":
        return per_concept_thresholds(sae, batches)
    raise ValueError(f"sae.inference_threshold must be one of {THRESHOLD_MODES}, not {mode!r}")


@torch.no_grad()
def mean_l0(
    sae: MatryoshkaBatchTopKSAE, batches: Iterable[torch.Tensor], threshold: torch.Tensor
) -> float:
    """Mean concepts per patch of ``batches`` under ``threshold``."""
    active = rows = 0
    for x in batches:
        active += int(fires(sae.pre_activations(x), threshold).sum())
        rows += x.shape[0]
    return active / max(rows, 1)
