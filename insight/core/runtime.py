"""Device and precision selection shared by the stages that run a model."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX512-BF16, AMX), Arm


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def bf16_unsupported_reason(device: torch.device) -> str | None:
    """None where ``device`` computes in bf16 natively; else why it does not."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no native bf16"
    if device.type != "cpu":
        return None
    if set(NATIVE_BF16_CPU_FLAGS) & cpu_flags():
        return None
    return "this CPU has no native bf16 (no AVX512-BF16, AMX or Arm BF16): bf16 is emulated and several times slower than fp32"


def effective_precision(precision: str, device: torch.device) -> str:
    """``precision``, except bf16 on a device without native bf16, which runs in fp32
    with a warning naming the reason (bf16 there would be silently many times slower)."""
    if precision != "bf16":
        return precision
    reason = bf16_unsupported_reason(device)
    if reason is None:
        return precision
    import logging

    logging.getLogger(__name__).warning("precision bf16 asked for, running fp32: %s", reason)
    return "fp32"
