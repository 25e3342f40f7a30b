"""``handoff report``: the improvement report (HTML, Markdown, summary.json)."""

from __future__ import annotations

from pathlib import Path

import typer

from db.session import ensure_migrated
from feedback.embeddings import embed
from feedback.report import build_report
from feedback.stats import shown_text
from playground.cli.export import Region, filters_from
from playground.settings import get_settings


def report(
    out: Path = typer.Option(..., "--out", help="Folder for report.html, report.md and summary.json."),
    event: str | None = typer.Option(None, help="Only this event code."),
    region: Region | None = typer.Option(None, help="Only this region."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    rounds: int = typer.Option(200, min=10, help="Bootstrap rounds."),
) -> None:
    """Write the improvement report: win rates with CIs, leaderboard, handoff analysis, what to improve."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    result = build_report(url, out, filters_from(event, region, None, None), seed=seed, rounds=rounds, embed=embed)
    overall = result.summary["overall"]
    typer.echo(
        f"{overall['votes']:,} votes, {overall['decided']:,} decided; handoff-on win rate "
        f"{shown_text(overall['handoff_on_win_rate'], overall['ci95'])} (95% CI "
        f"{[shown_text(x, overall['ci95']) for x in overall['ci95']] if overall['ci95'] else 'n/a'})"
    )
    typer.echo(f"Wrote {result.html_path}, {result.md_path}, {result.summary_path}")
