"""Logging for workflow scripts: everything (logging, warnings, tqdm) goes to the rule's log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import tqdm


def setup_logging(log_file: str | Path | None, name: str = "insight") -> logging.Logger:
    """Send stderr (tqdm bars, warnings, tracebacks) and the ``insight`` logger to ``log_file``."""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger(name)


def progress(total: int | None, desc: str, unit: str = "it") -> tqdm.tqdm:
    """A tqdm bar on stderr that stays readable in a log file (updates at most every 5 s
    when stderr is not a terminal)."""
    interactive = sys.stderr.isatty()
    return tqdm.tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.1 if interactive else 5.0,
        dynamic_ncols=interactive,
    )
