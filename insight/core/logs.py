"""Logging for workflow scripts: the project's messages, warnings, progress and tracebacks
go to the rule's log, one timestamped line each; other libraries' INFO chatter does not."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import tqdm

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROGRESS_LOGGER = "insight.progress"


def setup_logging(log_file: str | Path | None, name: str = "insight") -> logging.Logger:
    """Send stderr (warnings, tracebacks) and the ``insight`` loggers (INFO and up) to
    ``log_file``; other libraries log WARNING and up only."""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(level=logging.WARNING, format=FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("insight").setLevel(logging.INFO)
    logging.captureWarnings(True)
    return logging.getLogger(name)


class _ProgressLines:
    """A file-like target for tqdm that turns each refresh into one log line (no ``\\r``
    redraws that would run into the log messages around them)."""

    def __init__(self) -> None:
        self.log = logging.getLogger(PROGRESS_LOGGER)

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            self.log.info(line)

    def flush(self) -> None:
        pass


def progress(total: int | None, desc: str, unit: str = "it") -> tqdm.tqdm:
    """A tqdm bar: redrawn in place on a terminal; in a log file, one line every 5 s at
    most (and one at the end) through the ``insight.progress`` logger."""
    interactive = sys.stderr.isatty()
    return tqdm.tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr if interactive else _ProgressLines(),
        mininterval=0.1 if interactive else 5.0,
        dynamic_ncols=interactive,
        ascii=None if interactive else True,
    )
