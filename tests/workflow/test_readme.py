"""README is the front door: short, cited, and every command it shows runs as shown."""

import os
import re
import shlex
import subprocess
import sys

import pytest
from workflow_utils import REPO, demo_command, readme_commands, snakemake

README = (REPO / "README.md").read_text()


def test_readme_is_short_and_cites_the_paper():
    assert len(README.splitlines()) <= 200
    prose = " ".join(README.replace("**", "").split())
    assert "INSIGHT: Interpretable Semantic Hierarchies in Vision-Language Encoders" in prose
    assert "arXiv:2601.13798" in README and "@article{" in README
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+)\)", README):
        assert (REPO / link).exists(), link
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_set_up_commands_are_what_ci_runs():
    install, demo = readme_commands()[0].split(" && ")
    assert install.startswith("pip install torch==2.14.1 torchvision==0.29.1 -e")
    assert demo_command() == ["snakemake", "--cores", "2", "--configfile", "config/demo.yaml"]
    ci = (REPO / ".ci/run").read_text().strip().splitlines()
    assert readme_commands()[1] == "python -m pytest -q tests" == ci[-1]


def _run(workdir, command: str) -> subprocess.CompletedProcess:
    program, *args = shlex.split(command)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(workdir)}
    if program == "insight":
        argv = [sys.executable, "-m", "insight.cli", *args]
        return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env)
    assert program == "snakemake", command
    return snakemake(workdir, *args, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands()[2:])
def test_every_readme_command_runs_on_the_demo(demo_run, command):
    """``insight`` and ``--report`` commands run as shown; a snakemake command for the
    paper's data, which the demo does not have, stops in a dry run before any job,
    naming the missing folder and the layout it expects, or the published DINOiser head
    to download."""
    if command.startswith("snakemake") and "--report" not in command:
        result = _run(demo_run, command + " -n")
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert (
            "does not exist. Expected for kind" in output
            or "does not exist: download CLIP-DINOiser's checkpoints/last.pt" in output
        ), output
        return
    result = _run(demo_run, command)
    assert result.returncode == 0, result.stdout + result.stderr
    if command.startswith("insight explain"):
        assert "wrote results/explain/" in result.stdout
    if command.startswith("insight caption"):
        assert "steered caption:" in result.stdout
