"""Which dtype the local model runs in on this device, chosen on the spot rather than hard-coded.

Event machines differ: on a CPU without native bf16 matrix units (AVX2-only AMD EPYC, for one)
bfloat16 is emulated, and batching 16 sessions gained 1.3x over one stream against 5.9x in float32
(bench/README.md). So ``auto`` picks bfloat16 only where the hardware computes it natively (a GPU
that supports it, or a CPU with AVX512-BF16 / AMX-BF16, confirmed by a short timed probe of a
decode-sized matmul), and float32 otherwise. The choice and its reason are logged once and kept on
the engine, whose answers store the dtype.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import torch

from playground.hardware import NATIVE_BF16_FLAGS, cpu_flags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # a torch dtype name: "float32", "bfloat16", "float16"
    reason: str


def probe_seconds(dtype: torch.dtype, rows: int = 16, width: int = 576, repeats: int = 30) -> float:
    """Best time of a decode-step-sized matmul (16 rows x a SmolLM2-sized MLP) in ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=generator).to(dtype)
    w = torch.randn(width, width * 4, generator=generator).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            torch.matmul(x, w)
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(x, w)
            best = min(best, time.perf_counter() - started)
    return best


@functools.lru_cache(maxsize=8)
def resolve_dtype(requested: str, device: str) -> DtypeChoice:
    """``requested`` as set (``HANDOFF_LOCAL_DTYPE``), or for ``auto`` the fastest native dtype here."""
    if requested != "auto":
        choice = DtypeChoice(requested, "set by HANDOFF_LOCAL_DTYPE")
    elif device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            choice = DtypeChoice("bfloat16", "GPU with native bfloat16")
        else:
            choice = DtypeChoice("float16", "GPU without bfloat16 support")
    elif device == "mps":
        choice = DtypeChoice("float16", "Apple GPU (MPS): float16 is its native half type")
    else:
        choice = _cpu_choice(cpu_flags())
    log.info("local model dtype: %s (%s)", choice.dtype, choice.reason)
    return choice


def _cpu_choice(flags: frozenset[str]) -> DtypeChoice:
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if not native:
        return DtypeChoice("float32", "CPU without native bfloat16 (no avx512_bf16/amx_bf16): bf16 would be emulated")
    bf16, fp32 = probe_seconds(torch.bfloat16), probe_seconds(torch.float32)
    if bf16 < fp32:
        return DtypeChoice("bfloat16", f"CPU with {'+'.join(native)}; probe: bf16 {fp32 / bf16:.2f}x float32")
    return DtypeChoice(
        "float32", f"CPU with {'+'.join(native)} but the probe found float32 faster ({bf16 / fp32:.2f}x)"
    )
