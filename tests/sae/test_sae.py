import numpy as np
import pytest
import torch
from planted import planted_features, write_shards

from insight.sae.data import SPLITS, FeatureBatches, split_mask
from insight.sae.evaluation import evaluate
from insight.sae.model import (
    MatryoshkaBatchTopKSAE,
    SAEConfig,
    batch_topk_indices,
    load_sae,
    matryoshka_group_sizes,
    save_sae,
)
from insight.sae.reference import reference_losses
from insight.sae.trainer import SAETrainer, TrainConfig, geometric_median

SMALL = SAEConfig(d_in=16, d_sae=64, k=3, group_sizes=(4, 12, 48))


def test_paper_group_sizes():
    assert matryoshka_group_sizes(8192) == (65, 245, 491, 983, 1966, 4442)
    assert sum(matryoshka_group_sizes(1000)) == 1000
    with pytest.raises(ValueError, match="sae.groups"):
        matryoshka_group_sizes(64)


@pytest.mark.parametrize("batch, width, k", [(50, 300, 4), (7, 40, 12), (3, 10, 10)])
def test_batch_topk_keeps_exactly_b_times_k(batch, width, k):
    pre = torch.randn(batch, width)
    pre[0] += 5.0  # one row dominates: forces the exact fallback for some shapes
    vals, flat = batch_topk_indices(pre, batch * k)
    assert len(flat) == batch * k == len(set(flat.tolist()))
    expected = pre.flatten().topk(batch * k).values
    torch.testing.assert_close(vals.sort(descending=True).values, expected)


def test_batch_topk_codes_count():
    sae = MatryoshkaBatchTopKSAE(SMALL)
    x = torch.randn(20, 16)
    codes = sae.encode_batch_topk(x)
    pre = sae.pre_activations(x)
    kept = pre.flatten().topk(20 * 3).values
    assert (codes > 0).sum() == (kept > 0).sum()
    assert (codes != 0).sum() <= 20 * 3


def test_matryoshka_loss_equals_naive_per_prefix_dense():
    torch.manual_seed(1)
    sae = MatryoshkaBatchTopKSAE(SMALL, seed=1)
    x = torch.randn(32, 16) * 2
    ours = sae.training_losses(x)
    naive = reference_losses(sae, x)
    # naive by hand as well: sum_j mean_b ||x_hat_j - x||^2 with z zeroed after l_j
    codes = naive["codes"]
    by_hand = sum(
        ((codes[:, :end] @ sae.W_dec[:end] + sae.b_dec - x) ** 2).sum(1).mean()
        for end in (4, 16, 64)
    )
    torch.testing.assert_close(ours["recon"], by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["loss"], naive["loss"], atol=1e-5, rtol=1e-5)
    ours["loss"].backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    naive = reference_losses(sae, x)
    naive["loss"].backward()
    for name, param in sae.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4)


def test_aux_loss_only_touches_dead_latents():
    config = SAEConfig(d_in=16, d_sae=64, k=3, group_sizes=(4, 12, 48), dead_after=100)
    sae = MatryoshkaBatchTopKSAE(config)
    dead = torch.arange(40, 64)
    sae.samples_since_fired[dead] = 1000
    x = torch.randn(32, 16)
    out = sae.training_losses(x)
    assert out["aux"] > 0
    out["aux"].backward()
    alive = torch.ones(64, dtype=torch.bool)
    alive[dead] = False
    assert sae.W_dec.grad[alive].abs().max() == 0
    assert sae.W_enc.grad[:, alive].abs().max() == 0
    assert sae.b_enc.grad[alive].abs().max() == 0
    assert sae.W_dec.grad[dead].abs().max() > 0
    # no dead latent, no aux loss
    sae.samples_since_fired.zero_()
    assert sae.training_losses(x)["aux"] == 0


def test_dead_counter_and_threshold_ema():
    sae = MatryoshkaBatchTopKSAE(SMALL)
    sae.update_statistics(torch.tensor([1, 2]), torch.tensor([0.5, 0.2]), batch=10)
    assert float(sae.threshold) == pytest.approx(0.2)
    assert sae.samples_since_fired[1] == 0 and sae.samples_since_fired[3] == 10
    sae.update_statistics(torch.tensor([3]), torch.tensor([1.2]), batch=10)
    # the release's beta 0.999: theta moves by 0.001 of the gap
    assert float(sae.threshold) == pytest.approx(0.2 + 0.001 * (1.2 - 0.2))
    assert sae.samples_since_fired[1] == 10 and sae.samples_since_fired[3] == 0


def test_the_ema_threshold_starts_after_step_1000_as_released():
    """dictionary_learning: ``if step > threshold_start_step: update_threshold``; the
    first update sets theta, the next ones move it by 1 - beta."""
    sae = MatryoshkaBatchTopKSAE(SMALL)
    assert (sae.config.threshold_momentum, sae.config.threshold_start_step) == (0.001, 1000)
    for step in (0, 500, 1000):
        sae.update_statistics(torch.tensor([1]), torch.tensor([0.7]), batch=4, step=step)
    assert float(sae.threshold) == -1.0 and sae.samples_since_fired[1] == 0  # counters run
    sae.update_statistics(torch.tensor([1]), torch.tensor([0.7]), batch=4, step=1001)
    sae.update_statistics(torch.tensor([2]), torch.tensor([0.2]), batch=4, step=1002)
    assert float(sae.threshold) == pytest.approx(0.7 + 0.001 * (0.2 - 0.7))


def test_held_out_split_is_by_image():
    import pyarrow as pa

    ids = pa.array([f"img{i // 5}" for i in range(5000)])
    mask = split_mask(ids, "heldout", 0.1)
    per_image = mask.reshape(-1, 5)
    assert (per_image.all(1) | ~per_image.any(1)).all()
    assert 0.05 < mask.mean() < 0.15


def test_the_calibration_split_takes_whole_images_from_training_only():
    import pyarrow as pa

    ids = pa.array([f"img{i // 5}" for i in range(5000)])
    train, held, calibration = (split_mask(ids, s, 0.1, 0.2) for s in SPLITS)
    assert ((held.astype(int) + calibration + train) == 1).all()  # disjoint, covering
    assert (held == split_mask(ids, "heldout", 0.1)).all()  # the held-out images do not move
    assert 0.12 < calibration.mean() < 0.28
    per_image = calibration.reshape(-1, 5)
    assert (per_image.all(1) | ~per_image.any(1)).all()
    assert not split_mask(ids, "calibration", 0.1).any()  # none by default
    assert (split_mask(ids, "train", 0.1) == ~held).all()
    with pytest.raises(ValueError, match="split must be one of"):
        FeatureBatches(["unused.parquet"], 8, split="test")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    x, dictionary = planted_features(n=24_000, d=32, atoms=48, active=3, seed=0)
    return write_shards(out, x), dictionary


def _trainer(paths, tmp_path=None, steps=None, epochs=8, checkpoint_every=1000):
    config = SAEConfig(
        d_in=32, d_sae=96, k=3, group_sizes=(8, 24, 64), dead_after=20_000, k_aux=16,
        threshold_momentum=0.01, threshold_start_step=0,  # ~700 steps: the EMA from the start
    )  # fmt: skip
    sae = MatryoshkaBatchTopKSAE(config, seed=0)
    data = FeatureBatches(paths, batch_size=256, shuffle_buffer=2048, seed=0)
    train = TrainConfig(
        lr=3e-3, batch_size=256, epochs=epochs, max_steps=steps, checkpoint_every=checkpoint_every
    )
    checkpoint = tmp_path / "ckpt.pt" if tmp_path else None
    return SAETrainer(sae, train, data, checkpoint)


def test_recovers_a_planted_dictionary(planted):
    paths, dictionary = planted
    trainer = _trainer(paths)
    trainer.fit()
    heldout = FeatureBatches(paths, 1024, split="heldout").epoch(0, shuffle=False, drop_last=False)
    metrics = evaluate(trainer.sae, heldout)
    assert metrics["fve"] > 0.9
    decoder = torch.nn.functional.normalize(trainer.sae.W_dec.detach(), dim=1).numpy()
    best = (dictionary @ decoder.T).max(axis=1)
    assert (best > 0.9).mean() > 0.8, best
    # thresholded inference fires about as often as BatchTopK on held-out data
    assert abs(metrics["l0_threshold"] - metrics["l0_batch_topk"]) <= 0.1 * metrics["l0_batch_topk"]
    assert len(metrics["fve_per_prefix"]) == 3 and metrics["fve_per_prefix"][0] < metrics["fve"]


def test_resume_after_kill_gives_the_same_weights(planted, tmp_path):
    paths, _ = planted
    uninterrupted = _trainer(paths, steps=30, epochs=2)
    uninterrupted.fit()

    killed = _trainer(paths, tmp_path, steps=30, epochs=2, checkpoint_every=7)

    def kill(trainer, metrics):
        if trainer.global_step == 17:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        killed.fit(on_step=kill)
    resumed = _trainer(paths, tmp_path, steps=30, epochs=2, checkpoint_every=7)
    assert resumed.load_checkpoint() and resumed.global_step == 14
    resumed.fit()
    assert resumed.global_step == uninterrupted.global_step == 30
    for a, b in zip(
        resumed.sae.state_dict().values(), uninterrupted.sae.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_geometric_median_matches_a_direct_minimisation():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(200, 5)), rng.normal(40.0, 1.0, size=(20, 5))])
    median = geometric_median(torch.tensor(points, dtype=torch.float64), tol=1e-10).numpy()
    direct = minimize(
        lambda y: np.linalg.norm(points - y, axis=1).sum(),
        points.mean(0),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 20_000},
    ).x
    np.testing.assert_allclose(median, direct, atol=1e-3)
    # the outliers pull the mean, not the median
    assert np.linalg.norm(median - points.mean(0)) > 3.0
    # three points on a line: the middle one
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(geometric_median(line, tol=1e-12), line[1], atol=1e-6, rtol=0)


def test_b_dec_starts_at_the_first_batchs_geometric_median():
    from workflow_utils import REPO

    from insight.cli import load_config

    assert load_config([], base=REPO / "config.yaml").sae.b_dec_init == "geometric_median"
    assert TrainConfig().b_dec_init == "geometric_median"
    first, second = torch.randn(64, 16) + 3.0, torch.randn(64, 16) - 3.0
    trainer = SAETrainer(
        MatryoshkaBatchTopKSAE(SMALL), TrainConfig(lr=1e-12, batch_size=64), data=None
    )
    trainer.step(first)
    trainer.step(second)  # only the first step sets it
    torch.testing.assert_close(
        trainer.sae.b_dec.detach(), geometric_median(first), atol=1e-6, rtol=0
    )
    zeros = SAETrainer(
        MatryoshkaBatchTopKSAE(SMALL),
        TrainConfig(lr=1e-12, batch_size=64, b_dec_init="zeros"),
        data=None,
    )
    zeros.step(first)
    assert zeros.sae.b_dec.abs().max() < 1e-9
    with pytest.raises(ValueError, match="sae.b_dec_init must be one of"):
        TrainConfig(b_dec_init="mean")


def test_grad_clip_caps_the_total_gradient_norm():
    batch = torch.randn(64, 16) * 50.0

    def gradient_after_one_step(grad_clip):
        train = TrainConfig(batch_size=64, b_dec_init="zeros", grad_clip=grad_clip)
        trainer = SAETrainer(MatryoshkaBatchTopKSAE(SMALL, seed=0), train, data=None)
        trainer.step(batch)
        return torch.cat([p.grad.flatten() for p in trainer.sae.parameters() if p.grad is not None])

    free, clipped = gradient_after_one_step(None), gradient_after_one_step(0.5)
    assert free.norm() > 5.0
    assert clipped.norm() == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(clipped, free * (0.5 / free.norm()), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="sae.grad_clip must be positive or null"):
        TrainConfig(grad_clip=0.0)


def test_nan_loss_names_the_step():
    trainer = SAETrainer(MatryoshkaBatchTopKSAE(SMALL), TrainConfig(batch_size=8), data=None)
    with pytest.raises(FloatingPointError, match="step 0"):
        trainer.step(torch.full((8, 16), float("nan")))


def test_nan_features_name_the_shard(tmp_path):
    x = np.ones((64, 32), dtype=np.float32)
    x[5, 3] = np.inf
    paths = write_shards(tmp_path, x)
    with pytest.raises(FloatingPointError, match="shard-00000.parquet"):
        list(FeatureBatches(paths, 16).epoch(0))


def test_save_load_roundtrip(tmp_path):
    sae = MatryoshkaBatchTopKSAE(SMALL)
    sae.threshold.fill_(0.3)
    save_sae(sae, tmp_path / "sae.safetensors")
    loaded = load_sae(tmp_path / "sae.safetensors")
    assert loaded.config == SMALL
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sae.safetensors"), "pt") as handle:
        assert handle.get_tensor("W_enc").shape == (16, 64)
        assert handle.get_tensor("W_dec").shape == (64, 16)


def test_linear_aux_k_gives_dead_latents_with_negative_pre_activations_a_gradient():
    """A dead latent whose pre-activation is negative on every patch: the ReLU reading of
    aux-k leaves it without gradient, the linear one pulls its encoder toward the residual."""
    import dataclasses

    config = SAEConfig(d_in=8, d_sae=16, k=2, group_sizes=(4, 12), dead_after=0, k_aux=4)
    x = torch.randn(32, 8)
    grads = {}
    for activation in ("relu", "linear"):
        sae = MatryoshkaBatchTopKSAE(dataclasses.replace(config, aux_activation=activation))
        with torch.no_grad():
            sae.b_enc.fill_(-100.0)  # every latent negative on every patch,
            sae.b_enc[5] = -5.0  # latent 5 the least negative: among each patch's top k_aux
            sae.samples_since_fired.fill_(1)  # every latent counts as dead
        sae.training_losses(x)["aux"].backward()
        grads[activation] = sae.b_enc.grad[5].abs().item()
    assert grads["relu"] == 0 and grads["linear"] > 0


def test_batches_of_whole_images_as_the_paper_and_the_release_take_them(tmp_path):
    """``batch_images``: every batch is that many whole images (all 16 patches each), every
    training image once per epoch, the order seeded."""
    images, patches = 100, 16
    x = np.zeros((images * patches, 4), np.float32)
    x[:, 0] = np.repeat(np.arange(images), patches)  # the image, readable from each row
    x[:, 1] = np.tile(np.arange(patches), images)
    paths = write_shards(tmp_path, x, patches, images_per_shard=40)
    data = FeatureBatches(paths, 256, shuffle_buffer=32 * patches, seed=3, batch_images=3)
    batches = list(data.epoch(0))
    seen = []
    for batch in batches:
        image_ids = batch[:, 0].numpy()
        assert batch.shape[0] == 3 * patches and len(np.unique(image_ids)) == 3
        for image in np.unique(image_ids):
            assert sorted(batch[image_ids == image, 1].tolist()) == list(range(patches))
        seen += np.unique(image_ids).tolist()
    train_images = len(
        np.unique(np.concatenate([b[:, 0].numpy() for b in data.epoch(0, drop_last=False)]))
    )
    assert (
        len(seen) == len(set(seen)) and len(batches) == data.steps_per_epoch() == train_images // 3
    )
    assert seen != sorted(seen)  # shuffled, and the same for the same seed
    assert [b[:, 0].tolist() for b in data.epoch(0)] == [b[:, 0].tolist() for b in batches]
