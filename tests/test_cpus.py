"""``usable_cpus``: the CPUs this process may run on, the one count every layer uses."""

from __future__ import annotations

import os

import pytest

from feedback.cpus import usable_cpus


def test_usable_cpus_follow_the_affinity_mask_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 2  # e.g. under taskset -c 2,5 on a 64-CPU machine


def test_usable_cpus_are_the_machines_where_the_os_has_no_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert usable_cpus() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # undeterminable
    assert usable_cpus() == 1
