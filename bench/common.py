"""Shared shape of a benchmark result: one line per target, ``name: measured (target) OK|MISS``."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    target: float
    unit: str = ""
    higher_is_better: bool = True

    @property
    def ok(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        return f"{self.name}: {self.measured:.3g}{self.unit} ({sign} {self.target:g}{self.unit}) {'OK' if self.ok else 'MISS'}"


def report(targets: list[Target]) -> None:
    for target in targets:
        print(target.line(), flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation like numpy's default."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


class PeakMemory:
    """Sample this process's resident memory (plus its children's) while the block runs.

    Sampling catches the peak of one phase, which ``ru_maxrss`` cannot (it is a whole-process high
    water mark, including model loading and earlier phases).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def _rss(self) -> int:
        process = psutil.Process()
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 2**30


def machine() -> str:
    """One line describing where the figures came from, with the load at the start."""
    import os
    import platform

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, load average {load}"
    )
