"""The demo workflow on a live one-node SLURM cluster through ``profiles/slurm``.

``.ci/run`` installs slurm-wlm and munge and sets INSIGHT_REQUIRE_SLURM=1, so there a
cluster that cannot start fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file
from slurm_cluster import OneNodeCluster, missing_tools
from workflow_utils import copy_checkout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TARGET = "results/models/sae.safetensors"
SMALL = "resources:\n  mem_mb_train_sae: 4000\n"  # a SAE job that fits this node
# from the local run, copied with their times (so they are up to date): the generated
# world, its image indexes, the world-trained CLIP and the DINOiser head. The SLURM run
# then extracts features from the same weights, which the comparison needs, and spends
# its time on the sharded extraction (one job cancelled and retried) and the SAE
COPIED = ("results/demo", "results/images", "results/models/clip")
COPIED_FILES = ("results/models/dinoiser.safetensors", "results/models/dinoiser.json")


def _unavailable(reason: str):
    if os.environ.get("INSIGHT_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM is required here (INSIGHT_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        _unavailable(
            f"SLURM cannot be started: {missing} not installed (apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        _unavailable("SLURM cannot be started: slurmd needs root")
    try:
        running = OneNodeCluster(tmp_path_factory.mktemp("slurm")).start()
    except RuntimeError as err:
        _unavailable(f"SLURM cannot be started: {err}")
    yield running
    running.stop()


def _checkout(path):
    path.mkdir()
    workdir = copy_checkout(path)
    (workdir / "small.yaml").write_text(SMALL)
    return workdir


def _cancel_first_running_shard_job(cluster, process, timeout: float = 600) -> str:
    """scancel the first extract_features job seen running; returns its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for job_id, _, state, comment in cluster.squeue():
            if state == "RUNNING" and "extract_features" in comment:
                subprocess.run(["scancel", job_id], env=cluster.env, check=True)
                return job_id
        time.sleep(0.2)
    raise AssertionError("no extract_features job was seen running")


def test_demo_on_slurm_equals_local_run_and_survives_a_cancelled_job(cluster, demo_run, tmp_path):
    local = (
        demo_run  # the whole demo, run locally; `small.yaml` changes none of the outputs compared
    )

    remote = _checkout(tmp_path / "slurm")
    for folder in COPIED:
        shutil.copytree(local / folder, remote / folder)
    for name in COPIED_FILES:
        shutil.copy2(local / name, remote / name)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        TARGET,
        "--workflow-profile",
        "profiles/slurm",
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--jobs",
        "2",
        # the profile's per-rule memory is sized for cluster nodes; this node is small, and
        # a command-line --set-resources replaces the profile's list
        "--set-resources",
        "extract_features:mem_mb=4000",
        "--configfile",
        "config/demo.yaml",
        "small.yaml",
    ]
    env = dict(cluster.env, HF_HUB_OFFLINE="1", PYTHONPATH=str(remote))
    log = tmp_path / "slurm-run.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=remote, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        try:
            cancelled = _cancel_first_running_shard_job(cluster, process)
            returncode = process.wait(timeout=1500)
        finally:
            if process.poll() is None:
                process.kill()
    output = log.read_text()
    assert returncode == 0, output[-5000:] + cluster.logs()
    assert f"SLURM-job '{cancelled}' failed" in output and "CANCELLED" in output
    assert "Trying to restart job" in output  # the profile's retries resubmitted it

    shards = sorted((local / "results/features/demo").glob("shard-*.parquet"))
    assert shards
    for shard in shards:
        twin = remote / "results/features/demo" / shard.name
        assert pq.read_table(twin).equals(pq.read_table(shard)), shard.name
    ours, theirs = (load_file(p / "results/models/sae.safetensors") for p in (remote, local))
    assert ours.keys() == theirs.keys()
    assert all(bool((ours[k] == theirs[k]).all()) for k in ours)
    assert "rule train_dinoiser" not in output and "rule train_clip" not in output
