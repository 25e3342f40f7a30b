"""The local model's dtype is chosen for the device at hand, never hard-coded (issue: AVX2 vs AMX)."""

from __future__ import annotations

import torch

from playground.engine import device
from playground.engine.device import DtypeChoice, resolve_dtype


def test_a_cpu_without_native_bf16_runs_float32() -> None:
    choice = device._cpu_choice(frozenset({"avx2", "fma", "f16c"}))
    assert choice.dtype == "float32"
    assert "no avx512_bf16/amx_bf16" in choice.reason


def test_a_cpu_with_native_bf16_is_decided_by_a_timed_probe() -> None:
    choice = device._cpu_choice(frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert choice.dtype in {"bfloat16", "float32"}
    assert "avx512_bf16+amx_bf16" in choice.reason and "probe" in choice.reason


def test_an_explicit_dtype_is_kept_with_its_reason() -> None:
    assert resolve_dtype("bfloat16", "cpu") == DtypeChoice("bfloat16", "set by HANDOFF_LOCAL_DTYPE")


def test_auto_on_this_machine_follows_its_cpu_flags() -> None:
    choice = resolve_dtype("auto", "cpu")
    native = {"avx512_bf16", "amx_bf16"} & device.cpu_flags()
    if not native:
        assert choice.dtype == "float32"
    assert getattr(torch, choice.dtype).is_floating_point


def test_the_probe_times_both_dtypes() -> None:
    assert device.probe_seconds(torch.float32, repeats=2) > 0
    assert device.probe_seconds(torch.bfloat16, repeats=2) > 0
