"""The MT-Bench prompts (``../shared/data``) that feed the demo data and the benchmarks.

A module of its own, with no database import, so the engine benchmarks load it on a machine that has
only the inference stack (a GPU box, say).
"""

from __future__ import annotations

import json
from pathlib import Path


class DemoDataError(RuntimeError):
    """The demo prompts could not be found; the message says where they were looked for."""


def prompts_path() -> Path:
    """MT-bench questions in the shared folder next to the repo (``../shared/data`` in CI)."""
    root = Path(__file__).resolve().parent.parent
    for candidate in (root.parent / "shared" / "data", root / "shared" / "data", Path("/work/shared/data")):
        path = candidate / "mt_bench_questions.jsonl"
        if path.is_file():
            return path
    raise DemoDataError(
        f"Demo prompts not found: expected mt_bench_questions.jsonl in {root.parent / 'shared' / 'data'}. "
        "Put the shared data folder next to the repository."
    )


def load_prompts() -> list[dict]:
    with prompts_path().open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
