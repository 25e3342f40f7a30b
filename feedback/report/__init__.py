"""Improvement report: ``report.html`` (standalone, charts inline as SVG), ``report.md`` and
``summary.json`` (every number in the report), built from the database with the export filters.

``summary`` computes every number once (its SQL is ``db.report``), ``themes`` clusters comments and
prompts, ``charts`` draws, ``render`` lays the same blocks out as Markdown and HTML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.embeddings import Embed
from feedback.export import ExportFilters
from feedback.memory import release_free_memory
from feedback.report.render import blocks, to_html, to_markdown
from feedback.report.summary import compute_summary

__all__ = ["ReportResult", "build_report"]


@dataclass(frozen=True)
class ReportResult:
    html_path: Path
    md_path: Path
    summary_path: Path
    summary: dict[str, Any]


def build_report(
    url: str, out_dir: Path, filters: ExportFilters, *, seed: int = 0, rounds: int = 200, embed: Embed | None = None
) -> ReportResult:
    """Compute the summary once, then write the three files from it (``embed``: see ``compute_summary``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = compute_summary(url, filters, seed=seed, rounds=rounds, embed=embed)
    release_free_memory()  # the vote frame is gone: the charts' renderer starts from what is still held
    items = blocks(summary)
    result = ReportResult(out_dir / "report.html", out_dir / "report.md", out_dir / "summary.json", summary)
    result.summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    result.md_path.write_text(to_markdown(items), encoding="utf-8")
    result.html_path.write_text(to_html(items), encoding="utf-8")
    return result
