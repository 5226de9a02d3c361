"""The inference threshold's three readings: recalibrated global, per concept, training EMA."""

import pytest
import torch

from insight.sae.interop import write_dictionary_learning
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, load_sae, save_sae
from insight.sae.thresholds import (
    calibrated_threshold,
    global_threshold,
    mean_l0,
    per_concept_thresholds,
)


def sae_and_batches(seed=0, batches=6):
    generator = torch.Generator().manual_seed(seed)
    sae = MatryoshkaBatchTopKSAE(SAEConfig(d_in=8, d_sae=32, k=3, group_sizes=(8, 24)), seed)
    sae.requires_grad_(False)
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-0.5, 0.2, 32))
    data = [torch.randn(50, 8, generator=generator) for _ in range(batches)]
    return sae, data


def test_global_threshold_is_the_mean_batch_topk_cutoff():
    sae, batches = sae_and_batches()
    cutoffs = []
    for x in batches:  # the 50*3-th largest pre-activation of each batch, by sorting
        ranked = sae.pre_activations(x).flatten().sort(descending=True).values
        cutoffs.append(float(ranked[50 * 3 - 1]))
    assert float(global_threshold(sae, batches)) == pytest.approx(sum(cutoffs) / len(cutoffs))


def test_per_concept_thresholds_match_each_concepts_batch_topk_frequency():
    sae, batches = sae_and_batches(1, batches=20)
    thresholds = per_concept_thresholds(sae, batches, bins=2048)
    kept = sum((sae.encode_batch_topk(x) > 0).sum(0) for x in batches)
    fired = sum((sae.pre_activations(x) > thresholds).sum(0) for x in batches)
    never = kept == 0
    assert torch.isinf(thresholds[never]).all() and (fired[never] == 0).all()
    # within the histogram's resolution: at most a couple of patches per concept
    assert (fired[~never] - kept[~never]).abs().max() <= 2
    rows = 50 * len(batches)
    assert mean_l0(sae, batches, thresholds) == pytest.approx(float(kept.sum()) / rows, abs=0.05)


def test_a_per_concept_threshold_survives_saving_and_is_refused_by_dictionary_learning(tmp_path):
    sae, batches = sae_and_batches(2)
    sae.threshold.fill_(0.3)  # the training EMA
    assert float(calibrated_threshold(sae, batches, "ema")) == pytest.approx(0.3)
    sae.set_threshold(calibrated_threshold(sae, batches, "per_concept"))
    save_sae(sae, tmp_path / "sae.safetensors")
    loaded = load_sae(tmp_path / "sae.safetensors")
    assert loaded.threshold.shape == (32,) and torch.equal(loaded.threshold, sae.threshold)
    assert torch.equal(loaded.encode(batches[0]), sae.encode(batches[0]))
    with pytest.raises(ValueError, match="one per concept"):
        write_dictionary_learning(loaded, tmp_path / "dl")
    with pytest.raises(ValueError, match="must be one of"):
        calibrated_threshold(sae, batches, "median")
