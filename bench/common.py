"""Shared shape of a benchmark result: one line per target, ``name: measured (target) OK|MISS``."""

from __future__ import annotations

from dataclasses import dataclass


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
