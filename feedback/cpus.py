"""The CPUs this process may use: one answer for the export's workers, the llama.cpp engines and benchmarks.

Here, the lowest layer that asks (``feedback`` exports; ``playground`` and ``bench`` import it), so every layer
counts the same CPUs: those of this process's affinity mask (``taskset``, a container's cpuset), not the
machine's, where the platform has one.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """How many CPUs this process may run on: its affinity mask's, else (no mask on this OS) the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
