"""What this machine can do, read without loading torch: CPU flags, llama.cpp's presence, the engine ``auto`` picks.

The settings object resolves ``HANDOFF_LOCAL_ENGINE=auto`` here, at start-up, so the rule needs to be cheap and
deterministic: it reads CPU flags and installed packages, never times anything. The rule follows the engines
measured side by side (bench/README.md, "Local engines side by side"):

- ``llama-server`` built (``make llama-cpp``) -> ``openai`` on it, on every CPU kind. llama.cpp's Q4 kernels
  decode one stream several times faster than transformers (85 against 17 tok/s on a quiet AMD EPYC Zen 4),
  and its continuous batching keeps the lead with 16 and 32 sessions (bench/README.md), where the in-process
  llama.cpp engine, decoding on the app's own threads and prefilling one prompt at a time, fell behind.
Where it is not built, per CPU kind:
- native bf16 (``avx512_bf16`` or ``amx_bf16``) -> ``transformers`` in bf16. On an Intel Xeon with AMX its
  batching gave 131 tok/s with 16 sessions against 47 for the in-process llama.cpp engine; on AMD EPYC Zen 5
  (avx512_bf16, no AMX) bf16 was 3.9x float32 with 16 sessions and answered first far sooner than
  llama.cpp in process. The figures do not set AMX apart from avx512_bf16 alone, so the rule does not either.
- no native bf16 (AVX2 only: AMD EPYC Zen 2/3) -> ``llamacpp``: transformers would run float32, and
  llama.cpp won one stream and 16 sessions alike.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # either one: bf16 computed natively (AVX-512 or AMX tiles)


# Device nodes an accelerator's driver creates (NVIDIA; AMD's ROCm, which torch also drives as "cuda"): without one,
# no torch build can use a GPU, so ``accelerator`` answers "cpu" without importing torch.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # a torch device name: "cuda", "mps", "cpu"
    reason: str


@functools.cache
def accelerator(nodes: tuple[str, ...] = GPU_DEVICE_NODES) -> DeviceChoice:
    """The device ``HANDOFF_LOCAL_DEVICE=auto`` runs the local model on: a GPU this torch build can use, else the CPU.

    Cheap where there is no GPU (the usual event laptop): torch is imported only when a GPU's device node exists
    or on Apple Silicon, where the question is whether this torch build can drive it.
    """
    apple_silicon = sys.platform == "darwin" and platform.machine() == "arm64"
    if not apple_silicon and not any(Path(node).exists() for node in nodes):
        return DeviceChoice("cpu", "no GPU on this machine")
    import torch

    if torch.cuda.is_available():
        return DeviceChoice("cuda", f"GPU {torch.cuda.get_device_name(0)}")
    if apple_silicon and torch.backends.mps.is_available():
        return DeviceChoice("mps", "Apple GPU (MPS)")
    return DeviceChoice("cpu", f"a GPU is present but torch {torch.__version__} cannot use it (a CPU build?)")


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


@functools.cache
def llama_server_binary() -> Path | None:
    """llama.cpp's own server (``llama-server``): beside this Python (``make llama-cpp`` builds it into the
    venv for this CPU), else on PATH; None where neither has it."""
    beside = Path(sys.executable).with_name("llama-server")
    if beside.is_file():
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


@functools.lru_cache(maxsize=16)
def choose_engine(
    requested: str,
    device: str,
    dtype: str,
    runs_gguf: bool,
    flags: frozenset[str],
    has_llama_cpp: bool,
    has_llama_server: bool,
) -> EngineChoice:
    """``requested`` as set, or for ``auto`` the local engine measured fastest for this kind of machine."""
    if requested != "auto":
        return EngineChoice(requested, "set by HANDOFF_LOCAL_ENGINE")
    if device != "cpu":
        return EngineChoice("transformers", f"device {device}: transformers runs the model on it")
    if not runs_gguf:
        return EngineChoice("transformers", "the local model is a Hugging Face model, not a GGUF llama.cpp can load")
    if has_llama_server:
        return EngineChoice(
            "openai",
            "llama.cpp's server is built for this CPU: llama.cpp's kernels, batched continuously across sessions",
        )
    if not has_llama_cpp:
        return EngineChoice("transformers", "llama.cpp is not built here (make llama-cpp builds it for this CPU)")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native and dtype in ("auto", "bfloat16"):
        return EngineChoice(
            "transformers",
            f"CPU with native bf16 ({'+'.join(native)}): batched bf16 beats llama.cpp in process with many sessions",
        )
    return EngineChoice("llamacpp", "CPU without native bf16: llama.cpp is the faster engine here")
