"""The project's own checks: snakemake --lint, snakefmt and ruff are clean."""

import re
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


MODULE_LINE_LIMIT = 400


def test_library_modules_stay_small_and_take_typed_settings():
    """Each module is one concern (no more than 400 lines), and the library reads typed
    settings (``insight.core.sections``), never the raw config dict."""
    long, raw = [], []
    for path in sorted((REPO / "insight").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MODULE_LINE_LIMIT:
            long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        if re.search(r"\bcfg(\[|\.get\()", text):
            raw.append(str(path.relative_to(REPO)))
    assert not long, long
    assert not raw, raw
