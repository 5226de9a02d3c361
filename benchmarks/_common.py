"""Shared helpers of the benchmarks: timing and the final JSON line."""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections.abc import Callable

import psutil
import torch


def best_time(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None
) -> float:
    """Best wall time of ``repeats`` calls (machines are noisy: the minimum is the signal)."""
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def cuda_sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def machine() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def report(result: dict) -> None:
    """Print the benchmark's last line: one JSON object."""
    print(json.dumps(result, sort_keys=True))


def parser(doc: str | None, repeats: int = 2) -> argparse.ArgumentParser:
    """An argument parser with the options every model benchmark shares."""
    result = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    result.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    result.add_argument(
        "--repeats", type=int, default=repeats, help="timed repeats; the best one counts"
    )
    return result


def release_freed_memory() -> None:
    """Hand memory that is freed but still held back to the system (Python's garbage, the
    Arrow pool's cache, glibc's free lists), so an RSS reading counts live memory only."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class PeakMemory:
    """Peak RSS above the starting RSS while the block runs. The start is read after
    :func:`release_freed_memory`, so memory that building the inputs freed but the
    allocators kept does not hide the block's own allocations."""

    def __enter__(self) -> PeakMemory:
        release_freed_memory()
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20
