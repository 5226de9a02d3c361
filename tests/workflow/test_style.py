"""The project's own checks: snakemake --lint, snakefmt and ruff are clean."""

import shutil
import subprocess
import sys

import pytest
from workflow_utils import REPO


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_snakemake_lint_is_clean():
    result = run(sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/demo.yaml")
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("snakefmt") is None, reason="snakefmt not installed")
def test_rules_are_snakefmt_formatted():
    result = run("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_python_is_ruff_clean():
    assert run("ruff", "check", ".").returncode == 0, run("ruff", "check", ".").stdout
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout
