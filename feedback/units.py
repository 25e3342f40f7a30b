"""Numbers as a person reads them, with units: one home for the pages, the wall and the report.

Exact values stay in summary.json, exports and folded tables; these are for prose and headlines.
"""

from __future__ import annotations

import math


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def format_ms(ms: float | None) -> str:
    """A duration: milliseconds under a second, else seconds with one decimal."""
    if ms is None:
        return "n/a"
    return f"{ms:,.0f} ms" if abs(ms) < 1000 else f"{ms / 1000:,.1f} s"


def format_wh(wh: float | None) -> str:
    """Energy as a person reads it: two significant figures, in mWh, Wh or kWh."""
    if wh is None:
        return "n/a"
    for unit, scale in (("kWh", 1000.0), ("Wh", 1.0), ("mWh", 0.001)):
        if abs(wh) >= scale or unit == "mWh":
            return f"{_two_figures(wh / scale)} {unit}"
    raise AssertionError("unreachable")


def format_usd(amount: float | None) -> str:
    """A dollar amount as a person reads it: cents above a dollar, two significant figures below."""
    if amount is None:
        return "n/a"
    if amount == 0 or abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${_two_figures(amount)}"


def _two_figures(value: float) -> str:
    if value == 0:
        return "0"
    digits = max(0, 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"
