"""The SAE stage: the architecture from its config section and training from shards."""

import pyarrow.parquet as pq
import pytest
import torch

from insight.core.settings import section_settings
from insight.features.shards import embeddings_of
from insight.sae.model import load_sae, matryoshka_group_sizes
from insight.sae.training import sae_config


def test_sae_config_takes_groups_or_derives_them_from_ratios():
    section = {
        "d_sae": 64,
        "k": 4,
        "k_aux": 8,
        "aux_coefficient": 0.03,
        "dead_after": 10,
        "threshold_momentum": 0.99,
        "aux_activation": "linear",
        "group_ratios": [0.25, 0.75],
    }
    ratios = section_settings("sae", section)
    assert sae_config(ratios, 16).group_sizes == matryoshka_group_sizes(64, (0.25, 0.75))
    given = sae_config(section_settings("sae", {**section, "groups": [16, 48]}), 16)
    assert given.group_sizes == (16, 48) and given.d_in == 16
    assert given.aux_activation == "linear"


def test_train_sae_from_shards_reports_and_leaves_no_checkpoint(tiny_run):
    report = tiny_run.reports["sae"]
    assert report["config"]["d_sae"] == 32 and report["config"]["k"] == 4
    assert report["metrics"]["steps"] >= 1
    assert 0 < report["metrics"]["heldout"]["l0_batch_topk"] <= 32
    assert not list((tiny_run.results / "checkpoints").glob("sae-*.pt"))
    by_threshold = report["metrics"]["heldout_l0_by_threshold"]
    assert set(by_threshold) == {"global", "per_concept", "ema"}
    # the configured reading is the one the saved SAE encodes with
    assert report["metrics"]["heldout"]["l0_threshold"] == pytest.approx(by_threshold["global"])


def test_encode_concept_shard_writes_the_thresholded_codes(tiny_run):
    sae = load_sae(tiny_run.results / "models/sae.safetensors")
    features = embeddings_of(pq.read_table(tiny_run.results / "features/demo/shard-00000.parquet"))
    # torch.tensor copies: the Arrow buffers behind the features are read-only
    codes = sae.encode(torch.tensor(features)).detach().numpy()
    table = pq.read_table(tiny_run.results / "concepts/demo/shard-00000.parquet")
    assert table.num_rows == (codes > 0).sum() == tiny_run.reports["concepts"]["activations"]
    rows = table.slice(0, 50).to_pylist()
    order = {(r["image_id"], r["patch"]) for r in rows}
    assert order
    patches = pq.read_table(
        tiny_run.results / "features/demo/shard-00000.parquet", columns=["image_id", "patch"]
    ).to_pylist()
    position = {(p["image_id"], p["patch"]): i for i, p in enumerate(patches)}
    for r in rows:
        assert r["activation"] == pytest.approx(
            codes[position[(r["image_id"], r["patch"])], r["concept"]], rel=1e-5
        )


def test_an_ema_that_never_started_is_left_out_or_refused_by_name(tiny_run, tmp_path):
    """With the release's start (step 1000) a short run has no EMA threshold: the report
    leaves it out, and asking to encode with it fails with a one-line reason."""
    import dataclasses

    from insight.sae.training import train_sae_from_shards

    shard = tiny_run.results / "features/demo/shard-00000.parquet"
    late = dataclasses.replace(tiny_run.cfg.sae, threshold_start_step=10**6)
    _, report = train_sae_from_shards([shard], late, torch.device("cpu"), tmp_path)
    assert set(report["metrics"]["heldout_l0_by_threshold"]) == {"global", "per_concept"}
    with pytest.raises(ValueError, match="the EMA was never updated"):
        train_sae_from_shards(
            [shard],
            dataclasses.replace(late, inference_threshold="ema"),
            torch.device("cpu"),
            tmp_path,
        )
