"""Evaluating an SAE: the inference threshold's calibration and held-out metrics (FVE
per Matryoshka prefix, L0, dead latents and SAEBench's core metrics)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from insight.core.sections import SAESettings
from insight.sae.data import FeatureBatches, first_rows, heldout_batches
from insight.sae.model import MatryoshkaBatchTopKSAE, fires


def set_inference_threshold(
    sae: MatryoshkaBatchTopKSAE, data: FeatureBatches, settings: SAESettings, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every reading of the inference threshold for the trained ``sae``, calibrated on up to
    ``threshold_calibration_rows`` rows of ``data`` (the training split, or the calibration
    split when ``sae.calibration_fraction`` > 0), and the L0 of each on those rows; the
    configured one is set on ``sae``."""
    from insight.sae.thresholds import THRESHOLD_MODES, calibrated_threshold, mean_l0

    batches = first_rows(data, settings.threshold_calibration_rows, device)
    if not batches:
        raise ValueError(f"no rows in the {data.split} split to calibrate the threshold on")
    sae.eval()
    thresholds = {mode: calibrated_threshold(sae, batches, mode) for mode in THRESHOLD_MODES}
    if float(thresholds["ema"].min()) < 0:  # the EMA never started: no value to report
        if settings.inference_threshold == "ema":
            raise ValueError(
                "sae.inference_threshold: ema, but the EMA was never updated: training ended "
                f"before step sae.threshold_start_step = {settings.threshold_start_step}"
            )
        del thresholds["ema"]
    l0 = {mode: mean_l0(sae, batches, value) for mode, value in thresholds.items()}
    sae.set_threshold(thresholds[settings.inference_threshold])
    return thresholds, l0


def threshold_l0(
    sae: MatryoshkaBatchTopKSAE,
    data: FeatureBatches,
    settings: SAESettings,
    device: torch.device,
    thresholds: dict[str, torch.Tensor],
) -> dict[str, float]:
    """The L0 of each threshold on up to ``threshold_calibration_rows`` rows of ``data``."""
    from insight.sae.thresholds import mean_l0

    batches = first_rows(data, settings.threshold_calibration_rows, device)
    return {mode: mean_l0(sae, batches, value) for mode, value in thresholds.items()}


def evaluate_heldout(
    sae: MatryoshkaBatchTopKSAE,
    feature_paths: Sequence[str | Path],
    settings: SAESettings,
    device: torch.device,
    thresholds: dict[str, torch.Tensor] | None = None,
) -> dict:
    """:func:`evaluate` on the held-out images of the shards (``sae.holdout_fraction``)."""
    return evaluate(sae.to(device), heldout_batches(feature_paths, settings), device, thresholds)


@torch.no_grad()
def evaluate(
    sae: MatryoshkaBatchTopKSAE,
    batches: Iterator[torch.Tensor],
    device: torch.device | str = "cpu",
    thresholds: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Held-out metrics: FVE overall and per Matryoshka prefix (thresholded codes), mean L0
    of the thresholded and of the BatchTopK codes, dead latents, and SAEBench's core
    metrics under their names (``saebench``: explained_variance, mse (per patch, summed
    over dimensions), cossim and l2_ratio (shrinkage, ||x_hat|| / ||x||) averaged over
    patches, l0, frac_alive). With ``thresholds`` (name -> threshold), the L0 under each one
    too (``l0_by_threshold``), in the same pass over the batches."""
    config = sae.config
    active_by_threshold = dict.fromkeys(thresholds or {}, 0)
    n = 0
    total = torch.zeros(config.d_in, dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    prefix_sse = torch.zeros(len(config.group_ends), dtype=torch.float64)
    l0_threshold = l0_topk = 0.0
    fired = torch.zeros(config.d_sae, dtype=torch.bool)
    cossim = l2_ratio = 0.0
    for batch in batches:
        x = batch.to(device)
        codes = sae.encode(x)
        topk_codes = sae.encode_batch_topk(x)
        if thresholds:
            pre = sae.pre_activations(x)
            for name, threshold in thresholds.items():
                active_by_threshold[name] += int(fires(pre, threshold).sum())
        x_hat = sae.decode(codes)
        cossim += torch.nn.functional.cosine_similarity(x_hat, x, dim=-1).double().sum().item()
        l2_ratio += (x_hat.norm(dim=-1) / x.norm(dim=-1).clamp(min=1e-12)).double().sum().item()
        for j, end in enumerate(config.group_ends):
            prefix_sse[j] += (sae.decode(codes, end) - x).double().pow(2).sum().cpu()
        l0_threshold += (codes > 0).sum().item()
        l0_topk += (topk_codes > 0).sum().item()
        fired |= (codes > 0).any(0).cpu()
        total += x.double().sum(0).cpu()
        total_sq += x.double().pow(2).sum().cpu()
        n += x.shape[0]
    if n == 0:
        raise ValueError(
            "no held-out rows to evaluate on (too few images for the held-out fraction?)"
        )
    sst = total_sq - total.pow(2).sum() / n
    fve = (1 - prefix_sse / sst).tolist()
    saebench = {
        "explained_variance": fve[-1],
        "mse": float(prefix_sse[-1]) / n,
        "cossim": cossim / n,
        "l2_ratio": l2_ratio / n,
        "l0": l0_threshold / n,
        "frac_alive": float(fired.float().mean()),
    }
    by_threshold = {"l0_by_threshold": {k: v / n for k, v in active_by_threshold.items()}}
    return {
        **(by_threshold if thresholds else {}),
        "saebench": saebench,
        "heldout_rows": n,
        "fve": fve[-1],
        "fve_per_prefix": fve,
        "l0_threshold": l0_threshold / n,
        "l0_batch_topk": l0_topk / n,
        "dead_latents": sae.dead_latents(),
        "never_fired_heldout": int((~fired).sum()),
        "threshold": float(sae.threshold) if sae.threshold.numel() == 1 else "per_concept",
    }
