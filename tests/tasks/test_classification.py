import numpy as np
import pytest
import torch

from insight.tasks.probe import (
    accuracy,
    explain,
    pool_concepts,
    select_pooling,
    sweep,
    train_probe,
)

PAPER_L1_GRID = (0.1, 1.0, 2.0, 4.0, 8.0)


def test_pooling_is_max_then_mean_eq_b14_b15():
    codes = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert pool_concepts(codes).tolist() == [3.0, 0.0, 2.0, 2.0, 0.0, 1.0]


def test_max_pooling_is_the_release_reading_and_selects_from_cached_vectors():
    codes = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert pool_concepts(codes, "max").tolist() == [3.0, 0.0, 2.0]
    cached = pool_concepts(codes)[None]
    assert select_pooling(cached, 3, "max").tolist() == [[3.0, 0.0, 2.0]]
    assert torch.equal(select_pooling(cached, 3, "max_mean"), cached)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_concepts(codes, "mean")


def separable_data(n=800, m=60, classes=4, seed=0):
    """Each class owns 3 concepts that fire strongly in its images; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.exponential(0.2, size=(n, m)) * (rng.random((n, m)) < 0.2)
    for c in range(classes):
        x[y == c, 3 * c : 3 * c + 3] += 1.0 + rng.random(((y == c).sum(), 3))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def split_and_train(data, cut, **settings):
    """A 4-class probe trained on the first ``cut`` rows, validated on the rest."""
    x, y = data
    return train_probe(x[:cut], y[:cut], x[cut:], y[cut:], 4, batch_size=64, **settings)


def test_every_lambda_of_the_paper_grid_leaves_a_useful_sparse_probe():
    """Mean-scaled L1 (DN-CBM's scale): every lambda in {0.1, 1, 2, 4, 8} keeps a probe
    well above chance with non-zero weights, and the non-zero weights fall as lambda grows."""
    x, y = separable_data()
    nonzero = []
    for l1 in PAPER_L1_GRID:
        probe = train_probe(
            x[:600], y[:600], x[600:], y[600:], 4, lr=1e-3, batch_size=64, l1=l1, epochs=20
        )
        assert accuracy(probe.logits(x[600:]), y[600:]) > 0.9, l1
        nonzero.append(probe.nonzero_per_class())
    assert all(count > 0 for count in nonzero)
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[0] > nonzero[-1]


def test_the_printed_sum_scale_empties_the_probe_from_lambda_one():
    """Eq. B.16 read literally (lambda * ||W||_1) zeroes every weight for lambda >= 1: the
    reason the mean scale is the default."""
    probe = split_and_train(separable_data(), 600, lr=1e-3, l1=1.0, epochs=5, l1_scale="sum")
    assert probe.nonzero_per_class() == 0.0


def test_a_probe_without_bias_keeps_its_bias_at_zero():
    probe = split_and_train(separable_data(n=300), 200, lr=1e-2, l1=0.0, epochs=3, use_bias=False)
    assert probe.bias.abs().sum() == 0 and probe.settings["bias"] is False


def concept_data(n=1200, m=40, seed=0):
    """Sparse image-level concepts; the class is a known function of concepts 3 and 17:
    class = 2 * [c3 > 0.5] + [c17 > 0.5]."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(0.3, size=(n, m)) * (rng.random((n, m)) < 0.3)
    x[:, 3] = rng.random(n)
    x[:, 17] = rng.random(n)
    y = 2 * (x[:, 3] > 0.5) + (x[:, 17] > 0.5)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_probe_finds_the_two_concepts_that_define_the_label():
    x, y = concept_data()
    probe, trials = sweep(
        x[:1000], y[:1000], 4, batch_sizes=[64], lrs=[0.05], l1s=[0.01], epochs=40
    )
    assert accuracy(probe.logits(x[1000:]), y[1000:]) > 0.9
    importance = probe.weight.abs().sum(0)
    assert set(torch.topk(importance, 2).indices.tolist()) == {3, 17}
    assert len(trials) == 1 and trials[0]["val_accuracy"] == probe.val_accuracy


def test_l1_sweep_changes_sparsity_monotonically():
    x, y = concept_data(seed=1)
    nonzero = []
    for l1 in (0.0, 1.0, 10.0, 100.0):
        probe = train_probe(
            x[:900], y[:900], x[900:], y[900:], 4, lr=0.05, batch_size=64, l1=l1, epochs=20
        )
        nonzero.append(probe.nonzero_per_class())
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[0] > nonzero[-1]


def test_explanation_shares_sum_to_the_logit():
    x, y = concept_data(n=400)
    probe = train_probe(
        x[:300], y[:300], x[300:], y[300:], 4, lr=0.05, batch_size=64, l1=0.0, epochs=5
    )
    result = explain(probe, x[0], top=x.shape[1])
    total = sum(result["contributions"]) + result["bias"]
    assert abs(total - result["logit"]) < 1e-4
    assert abs(sum(result["shares"]) + result["bias"] / result["logit"] - 1.0) < 1e-4


def test_refit_retrains_the_chosen_setting_on_train_and_validation_for_its_epochs():
    """The release's last step, against a plain AdamW loop written out here (no L1)."""
    from insight.tasks.probe import refit

    x, y = concept_data(n=300)
    probe, _ = sweep(x, y, 4, batch_sizes=[32], lrs=[0.05], l1s=[0.0], epochs=6)
    refitted = refit(probe, x, y, 4)
    epochs = probe.epoch + 1
    assert refitted.settings["refit_epochs"] == epochs
    assert refitted.val_accuracy == probe.val_accuracy  # the sweep's choice, kept on record
    generator = torch.Generator().manual_seed(0)
    weight = torch.zeros(4, x.shape[1], requires_grad=True)
    bias = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=0.05, weight_decay=0.0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 32):
            idx = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(x[idx] @ weight.T + bias, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.testing.assert_close(refitted.weight, weight.detach())
    torch.testing.assert_close(refitted.bias, bias.detach())
    assert not torch.equal(refitted.weight, probe.weight)  # it saw the held-out rows too
