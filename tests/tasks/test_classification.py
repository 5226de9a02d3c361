import numpy as np
import torch

from insight.tasks.probe import accuracy, explain, pool_concepts, sweep, train_probe


def test_pooling_is_max_then_mean_eq_b14_b15():
    codes = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert pool_concepts(codes).tolist() == [3.0, 0.0, 2.0, 2.0, 0.0, 1.0]


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
    for l1 in (0.0, 0.01, 0.1, 1.0):
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
