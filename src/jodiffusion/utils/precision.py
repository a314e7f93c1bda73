"""Which number format a run computes in: one decision for training, sampling and the segmenters.

``auto`` picks bf16 autocast where the hardware runs it natively: a GPU with bf16 support, or a CPU with
bf16 instructions (AVX512-BF16 or AMX). On such a CPU bf16 autocast trains the demo's UNet 1.8x faster
than fp32 (docs/benchmarks.md); on a CPU without them torch emulates bf16 and it is slower than fp32, so
``auto`` stays in fp32 there. The environment variable ``JODIFFUSION_CPU_BF16`` (``1`` / ``0``) overrides
the CPU check, e.g. to turn bf16 off on a machine that has it.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger("jodiffusion")

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ENV_SWITCH = "JODIFFUSION_CPU_BF16"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16_instructions() -> bool:
    if platform.system() != "Linux":
        return False
    return bool(cpu_flags() & set(CPU_BF16_FLAGS))


def cpu_supports_bf16() -> bool:
    """True where this CPU runs bf16 natively (or ``JODIFFUSION_CPU_BF16=1``; ``=0`` says no)."""
    switch = os.environ.get(ENV_SWITCH, "").strip()
    if switch in ("0", "1"):
        return switch == "1"
    if switch:
        log.warning("%s=%r is neither 0 nor 1; ignored", ENV_SWITCH, switch)
    return _cpu_has_bf16_instructions()


def bf16_native(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


def resolve_mixed_precision(setting: str, device: torch.device | str | None = None) -> str:
    """A training setting (``auto``, ``no``, ``bf16``, ``fp16``) -> what accelerate is given."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if setting == "auto":
        return "bf16" if bf16_native(device) else "no"
    if device.type == "cpu" and setting == "fp16":
        log.warning("mixed_precision=fp16 requested on a CPU; training in full precision (bf16 is the CPU's format)")
        return "no"
    if device.type == "cpu" and setting == "bf16" and not cpu_supports_bf16():
        log.warning("mixed_precision=bf16 on a CPU without bf16 instructions: torch emulates it, slower than fp32")
    return setting


def autocast_dtype(setting: str, device: torch.device | str) -> torch.dtype | None:
    """An inference setting (``auto``, ``fp32``/``no``, ``bf16``) -> the autocast dtype, or None for fp32."""
    if setting == "auto":
        return torch.bfloat16 if bf16_native(device) else None
    return torch.bfloat16 if setting == "bf16" else None


__all__ = ["CPU_BF16_FLAGS", "ENV_SWITCH", "autocast_dtype", "bf16_native", "cpu_flags", "cpu_supports_bf16",
           "resolve_mixed_precision"]
