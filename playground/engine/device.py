"""Which dtype the local model runs in on this device, chosen on the spot rather than hard-coded.

Event machines differ: on a CPU without native bf16 matrix units (AVX2-only AMD EPYC, for one)
bfloat16 is emulated, and batching 16 sessions gained 1.3x over one stream against 5.9x in float32
(bench/README.md). So ``auto`` picks bfloat16 only where the hardware computes it natively (a GPU
that supports it, or a CPU with AVX512-BF16 / AMX-BF16, confirmed by a short timed probe of a
decode-sized matmul), and float32 otherwise. The choice and its reason are logged once and kept on
the engine, whose answers store the dtype.

"Natively" means what this process can execute, asked of the CPU itself (cpuid, as torch reads it),
not the kernel's /proc/cpuinfo alone: the two differ under an emulator (QEMU user mode emulating an
AVX2-only CPU passes the host's /proc/cpuinfo through, avx512_bf16 included; bench/emulated_cpu.py),
and torch's kernels follow cpuid.
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


def probe_seconds(rows: int = 16, width: int = 576, repeats: int = 30) -> dict[str, float]:
    """Best time of a decode-step-sized matmul (16 rows x a SmolLM2-sized MLP) in bfloat16 and in float32.

    On one thread, the two dtypes interleaved: with every thread, load on the other cores (the app, a build)
    times the wait for a descheduled worker instead of the kernel, and a dtype timed second sees other load
    than the first. Under load 11 on 2 cores, the earlier all-thread, one-dtype-then-the-other probe put
    bfloat16 at 2.0x, 2.1x and 30x float32 on three tries; this one at 1.54-1.60x each time.
    """
    generator = torch.Generator().manual_seed(0)
    dtypes = (torch.bfloat16, torch.float32)
    x = torch.randn(rows, width, generator=generator)
    w = torch.randn(width, width * 4, generator=generator)
    operands = {dtype: (x.to(dtype), w.to(dtype)) for dtype in dtypes}
    best = dict.fromkeys(dtypes, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for dtype in dtypes:
                for _ in range(3):
                    torch.matmul(*operands[dtype])
            for _ in range(repeats):
                for dtype in dtypes:
                    started = time.perf_counter()
                    torch.matmul(*operands[dtype])
                    best[dtype] = min(best[dtype], time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return {str(dtype).removeprefix("torch."): seconds for dtype, seconds in best.items()}


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
        flags = cpu_flags()
        choice = _cpu_choice(flags, not_executable(flags))
    log.info("local model dtype: %s (%s)", choice.dtype, choice.reason)
    return choice


# torch's cpuid questions (its cpuinfo library) for the native-bf16 flags; private names, so asked with getattr
CPUID_CHECKS = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}


def not_executable(flags: frozenset[str]) -> tuple[str, ...]:
    """The native-bf16 flags in ``flags`` (/proc/cpuinfo) that this process's cpuid, as torch reads it, lacks.

    torch reports AMX tiles, not AMX-BF16 alone, so ``amx_bf16`` counts only with tiles. A torch without a
    check keeps the /proc/cpuinfo answer for that flag.
    """
    missing = []
    for flag, check_name in CPUID_CHECKS.items():
        check = getattr(torch.cpu, check_name, None)
        if flag in flags and check is not None and not check():
            missing.append(flag)
    return tuple(missing)


def _cpu_choice(flags: frozenset[str], masked: tuple[str, ...] = ()) -> DtypeChoice:
    """``flags``: the CPU flags (/proc/cpuinfo); ``masked``: its native-bf16 ones this process's cpuid lacks."""
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags and flag not in masked]
    if not native:
        also = (
            f"; /proc/cpuinfo lists {'+'.join(masked)} but this process's cpuid has not (an emulator?)"
            if masked
            else ""
        )
        return DtypeChoice(
            "float32", f"CPU without native bfloat16 (no avx512_bf16/amx_bf16){also}: bf16 would be emulated"
        )
    timed = probe_seconds()
    bf16, fp32 = timed["bfloat16"], timed["float32"]
    if bf16 < fp32:
        return DtypeChoice("bfloat16", f"CPU with {'+'.join(native)}; probe: bf16 {fp32 / bf16:.2f}x float32")
    return DtypeChoice(
        "float32", f"CPU with {'+'.join(native)} but the probe found float32 faster ({bf16 / fp32:.2f}x)"
    )
