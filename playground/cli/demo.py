"""``handoff demo-data``: fill the configured database with seeded, realistic demo feedback."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from db.session import ensure_migrated
from feedback.demo_data import DemoDataError, generate
from playground.settings import get_settings


def demo_data(
    votes: int = typer.Option(..., min=1, help="How many votes to create."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same data."),
    win_rate: float = typer.Option(0.6, min=0.0, max=1.0, help="True P(handoff arm wins a decided vote)."),
) -> None:
    """Create demo events (DEMO-SF, DEMO-EU, DEMO-APAC) with conversations, answers and votes."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    with Progress(
        TextColumn("writing votes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("demo", total=votes)
        try:
            written = generate(url, votes, seed, win_rate, progress=lambda n: bar.advance(task, n))
        except DemoDataError as error:
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"Wrote {written:,} demo votes (seed {seed}, true handoff win rate {win_rate:g}).")
