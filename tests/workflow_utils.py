"""Run the workflow in a scratch copy of this checkout (so tests never touch results/)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = (
    "Snakefile",
    "config.yaml",
    "config",
    "workflow",
    "insight",
    "profiles",
    "envs",
    "pyproject.toml",
)


def copy_checkout(dest: Path) -> Path:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(workdir))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        preexec_fn=lambda: os.umask(0o022),  # the usual umask, whatever the caller's
        env=env,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (empty when nothing to do)."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", output, re.S)
    if not match:
        return {}
    jobs = {}
    for line in match.group(1).splitlines():
        name, count = line.split()
        jobs[name] = int(count)
    return jobs


def readme_commands() -> list[str]:
    """Every command line of README's ``bash`` blocks, in order (comments dropped)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def demo_command() -> list[str]:
    """The snakemake part of README's first set-up command, as arguments."""
    first = readme_commands()[0]
    return shlex.split(first.split("&&")[1])


def planned_outputs(output: str) -> list[tuple[str, list[str]]]:
    """Each job of a dry run as (rule, its output paths), in the order listed."""
    jobs = []
    for rule, outputs in re.findall(
        r"^(?:local)?rule (\w+):\n(?:    \w.*\n)*?    output: (.*)$", output, re.M
    ):
        jobs.append((rule, [path.strip() for path in outputs.split(",")]))
    return jobs
