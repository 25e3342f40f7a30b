"""The local model's dtype is chosen for the device at hand, never hard-coded (issue: AVX2 vs AMX)."""

from __future__ import annotations

import platform
import sys

import pytest
import torch

from playground.engine import device
from playground.engine.device import DtypeChoice, resolve_dtype
from playground.hardware import (
    DeviceChoice,
    EngineChoice,
    accelerator,
    choose_engine,
    cpu_flags,
    llama_cpp_installed,
    llama_server_binary,
)
from playground.settings import Settings


def test_a_cpu_without_native_bf16_runs_float32() -> None:
    choice = device._cpu_choice(frozenset({"avx2", "fma", "f16c"}))
    assert choice.dtype == "float32"
    assert "no avx512_bf16/amx_bf16" in choice.reason


def test_a_cpu_with_native_bf16_is_decided_by_a_timed_probe() -> None:
    choice = device._cpu_choice(frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert choice.dtype in {"bfloat16", "float32"}
    assert "avx512_bf16+amx_bf16" in choice.reason and "probe" in choice.reason


def test_bf16_listed_in_proc_cpuinfo_but_not_in_this_process_cpuid_runs_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QEMU user mode emulating an AVX2-only CPU passes the host's /proc/cpuinfo (avx512_bf16) through while its
    cpuid, which torch's kernels follow, has no bf16 (bench/emulated_cpu.py): cpuid decides."""
    flags = frozenset({"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert device.not_executable(flags) == ("avx512_bf16",)
    choice = device._cpu_choice(flags, device.not_executable(flags))
    assert choice.dtype == "float32"
    assert "no avx512_bf16/amx_bf16" in choice.reason and "/proc/cpuinfo lists avx512_bf16" in choice.reason
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert device.not_executable(flags) == ()


def test_amx_bf16_needs_tiles_in_cpuid_and_a_torch_without_the_check_keeps_proc_cpuinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = frozenset({"avx2", "amx_tile", "amx_bf16"})
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert device.not_executable(flags) == ("amx_bf16",)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert device.not_executable(flags) == ()


def test_this_machine_cpuid_and_proc_cpuinfo_agree_natively() -> None:
    """Outside an emulator the kernel's flags are the CPU's: nothing is masked (so `auto` is unchanged here)."""
    assert device.not_executable(device.cpu_flags()) == ()


def test_an_explicit_dtype_is_kept_with_its_reason() -> None:
    assert resolve_dtype("bfloat16", "cpu") == DtypeChoice("bfloat16", "set by HANDOFF_LOCAL_DTYPE")


def test_auto_on_this_machine_follows_its_cpu_flags() -> None:
    choice = resolve_dtype("auto", "cpu")
    native = {"avx512_bf16", "amx_bf16"} & device.cpu_flags()
    if not native:
        assert choice.dtype == "float32"
    assert getattr(torch, choice.dtype).is_floating_point


def test_the_probe_times_both_dtypes_on_one_thread_and_gives_the_threads_back() -> None:
    threads = torch.get_num_threads()
    timed = device.probe_seconds(repeats=2)
    assert set(timed) == {"bfloat16", "float32"} and all(0 < seconds < 1 for seconds in timed.values())
    assert torch.get_num_threads() == threads


# --- the engine HANDOFF_LOCAL_ENGINE=auto picks (playground/hardware.py) ---------------------------
AVX2 = frozenset({"avx2", "fma", "f16c"})
AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
ZEN5 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"})  # AMD EPYC family 26: no AMX


def test_auto_on_a_cpu_runs_llama_server_wherever_it_is_built() -> None:
    """llama.cpp's kernels with continuous batching: what every CPU kind gets once `make llama-cpp` built it."""
    for flags in (AVX2, ZEN5, AMX):
        for dtype in ("auto", "float32", "bfloat16"):
            choice = choose_engine("auto", "cpu", dtype, True, flags, True, True)
            assert choice.kind == "openai" and "llama.cpp's server" in choice.reason
    assert choose_engine("auto", "cpu", "auto", True, AVX2, False, True).kind == "openai"  # the server alone is enough


def test_auto_runs_llama_cpp_in_process_on_a_cpu_without_native_bf16_and_no_server() -> None:
    choice = choose_engine("auto", "cpu", "auto", True, AVX2, True, False)
    assert choice.kind == "llamacpp" and "without native bf16" in choice.reason


def test_auto_on_avx512_bf16_without_amx_and_no_server_runs_transformers_in_bf16() -> None:
    """AMD EPYC Zen 5: measured like AMX (bench/README.md), so the same engine; bf16 if the probe agrees."""
    zen5 = choose_engine("auto", "cpu", "auto", True, ZEN5, True, False)
    assert zen5.kind == "transformers" and "avx512_bf16" in zen5.reason and "amx" not in zen5.reason
    assert choose_engine("auto", "cpu", "float32", True, ZEN5, True, False).kind == "llamacpp"
    assert "avx512_bf16" in device._cpu_choice(ZEN5).reason and "probe" in device._cpu_choice(ZEN5).reason


def test_auto_keeps_transformers_where_llama_cpp_cannot_run_or_batched_bf16_wins() -> None:
    assert choose_engine("auto", "cpu", "auto", True, AMX, True, False).kind == "transformers"
    assert choose_engine("auto", "cpu", "float32", True, AMX, True, False).kind == "llamacpp"  # bf16 ruled out
    assert choose_engine("auto", "cuda", "auto", True, AVX2, True, True).kind == "transformers"
    assert "not a GGUF" in choose_engine("auto", "cpu", "auto", False, AVX2, True, True).reason
    assert "make llama-cpp" in choose_engine("auto", "cpu", "auto", True, AVX2, False, False).reason
    assert choose_engine("openai", "cpu", "auto", True, AVX2, True, True) == EngineChoice(
        "openai", "set by HANDOFF_LOCAL_ENGINE"
    )


def test_settings_read_back_the_engine_auto_chose_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_LOCAL_ENGINE", "auto")
    settings = Settings()
    expected = choose_engine(
        "auto", "cpu", "auto", True, cpu_flags(), llama_cpp_installed(), llama_server_binary() is not None
    )
    assert settings.local_engine == expected.kind != "auto"
    assert settings.local_engine_reason == expected.reason


def test_the_app_skips_streamlits_full_collection_after_each_run() -> None:
    """The option exists in this Streamlit (an unknown one would stop ``streamlit run``) and the app sets it off."""
    from streamlit import config

    from playground.startup import streamlit_command

    command = streamlit_command(8501, "127.0.0.1")
    assert command[command.index("--runner.postScriptGC") + 1] == "false"
    assert config.get_option("runner.postScriptGC") is True  # Streamlit's default, which the app turns off


def test_the_app_process_has_openmp_threads_sleep_unless_the_operator_says_otherwise() -> None:
    from playground.startup import streamlit_environment

    assert streamlit_environment({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    assert streamlit_environment({"OMP_WAIT_POLICY": "active"})["OMP_WAIT_POLICY"] == "active"


# --- the device HANDOFF_LOCAL_DEVICE=auto picks (playground/hardware.py ``accelerator``) -----------------
def test_auto_device_is_the_gpu_torch_can_use_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's answer follows torch; with no GPU device node at all, torch is not even asked."""
    choice = accelerator()
    if torch.cuda.is_available():
        assert choice.device == "cuda" and torch.cuda.get_device_name(0) in choice.reason
    else:
        assert choice.device == "cpu"
    monkeypatch.setenv("HANDOFF_LOCAL_DEVICE", "auto")
    settings = Settings()
    assert (settings.local_device, settings.local_device_reason) == (choice.device, choice.reason)
    monkeypatch.setenv("HANDOFF_LOCAL_DEVICE", "cpu")
    assert Settings().local_device_reason == "set by HANDOFF_LOCAL_DEVICE"


def test_a_gpu_node_that_this_torch_cannot_drive_leaves_the_model_on_the_cpu_and_says_why(tmp_path) -> None:
    """A GPU machine with torch's CPU build (this project's lock on a CPU host): the CPU, with the reason."""
    node = tmp_path / "nvidia0"
    node.touch()
    choice = accelerator.__wrapped__((str(node),))
    if torch.cuda.is_available():
        assert choice.device == "cuda"
    else:
        assert choice == DeviceChoice(
            "cpu", f"a GPU is present but torch {torch.__version__} cannot use it (a CPU build?)"
        )
    if not (sys.platform == "darwin" and platform.machine() == "arm64"):  # there torch is asked regardless
        assert accelerator.__wrapped__((str(tmp_path / "absent"),)) == DeviceChoice("cpu", "no GPU on this machine")
