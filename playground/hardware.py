"""What this machine can do, read without loading torch: CPU flags, llama.cpp's presence, the engine ``auto`` picks.

The settings object resolves ``HANDOFF_LOCAL_ENGINE=auto`` here, at start-up, so the rule needs to be cheap and
deterministic: it reads CPU flags and installed packages, never times anything. The rule follows the engines
measured side by side (bench/README.md, "Local engines side by side"): on a CPU with native bf16 matrix units
(an Intel Xeon with AMX) the transformers engine's batching gave 131 tok/s with 16 sessions against 47 for the
in-process llama.cpp engine; on an AVX2-only CPU (AMD EPYC, float32) llama.cpp won one stream and 16 sessions alike.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class EngineChoice:
    kind: str  # "transformers" | "llamacpp" | "openai"
    reason: str


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist); read once."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@functools.lru_cache(maxsize=16)
def choose_engine(
    requested: str, device: str, dtype: str, runs_gguf: bool, flags: frozenset[str], has_llama_cpp: bool
) -> EngineChoice:
    """``requested`` as set, or for ``auto`` the local engine measured fastest for this kind of machine."""
    if requested != "auto":
        return EngineChoice(requested, "set by HANDOFF_LOCAL_ENGINE")
    if device != "cpu":
        return EngineChoice("transformers", f"device {device}: transformers runs the model on it")
    if not runs_gguf:
        return EngineChoice("transformers", "the local model is a Hugging Face model, not a GGUF llama.cpp can load")
    if not has_llama_cpp:
        return EngineChoice("transformers", "llama-cpp-python is not installed (make llama-cpp builds it for this CPU)")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native and dtype in ("auto", "bfloat16"):
        return EngineChoice(
            "transformers",
            f"CPU with native bf16 ({'+'.join(native)}): batched bf16 beats llama.cpp with many sessions",
        )
    return EngineChoice("llamacpp", "CPU without native bf16: llama.cpp is the faster engine here")
