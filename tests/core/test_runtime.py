"""bf16 only where the device computes in bf16 natively; elsewhere fp32 with the reason."""

import logging

import pytest
import torch

from insight.core import runtime


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx512f", "avx2"}, "fp32"),  # AVX-512 without BF16 (an AMD EPYC of this kind)
        ({"avx512f", "avx512_bf16"}, "bf16"),
        ({"amx_bf16", "amx_tile"}, "bf16"),
        ({"fp", "asimd", "bf16"}, "bf16"),  # Arm with BF16
    ],
)
def test_bf16_runs_only_on_cpus_with_native_bf16(monkeypatch, caplog, flags, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.WARNING, logger="insight.core.runtime"):
        assert runtime.effective_precision("bf16", torch.device("cpu")) == expected
    warned = [r.getMessage() for r in caplog.records]
    if expected == "fp32":
        assert len(warned) == 1 and "no native bf16 (no AVX512-BF16, AMX or Arm BF16)" in warned[0]
    else:
        assert warned == []
    assert runtime.effective_precision("fp32", torch.device("cpu")) == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nFeatures\t: asimd\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k),
    )
    assert runtime.cpu_flags() == {"fpu", "avx512f", "avx512_bf16", "asimd"}
