"""``handoff demo-data``: fill the configured database with seeded, realistic demo feedback.

The ``--plant-*`` options add effects of known size (see ``feedback.demo_data.Plant``), so the report's
controls can be checked against the truth: style control, bot flags, the latency leak, participant
bootstrap intervals and judge agreement.
"""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from db.session import ensure_migrated
from feedback.demo_data import Plant, generate
from feedback.prompts import DemoDataError
from playground.settings import get_settings


def demo_data(
    votes: int = typer.Option(..., min=1, help="How many votes to create."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same data."),
    win_rate: float = typer.Option(0.6, min=0.0, max=1.0, help="True P(handoff arm wins a decided vote)."),
    plant_length_preference: float = typer.Option(
        0.0, help="Voters' extra logit per unit of normalised token difference: longer answers win more."
    ),
    plant_bots: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of participants that are bots (always left, votes in under 1.5 s)."
    ),
    plant_latency_leak_ms: float | None = typer.Option(
        None, help="Extra mean duration of the handoff pane in ms; 0 = no timing difference (default: ~1.2 s)."
    ),
    plant_speed_preference: float = typer.Option(
        0.0, help="Voters' extra logit for the pane that finished first (live display)."
    ),
    plant_fair_share: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of votes that saw the latency-fair display."
    ),
    plant_heterogeneity: float = typer.Option(
        0.0, min=0.0, help="Standard deviation (logit) of each participant's own taste for the handoff arm."
    ),
    plant_origin_leak: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of cloud answers that name their model and company."
    ),
    plant_duplicates: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of conversations that repeat the participant's previous prompt."
    ),
    plant_judge_agreement: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Write verdicts of a 'planted-judge' agreeing with people with this probability."
    ),
) -> None:
    """Create demo events (DEMO-SF, DEMO-EU, DEMO-APAC) with conversations, answers and votes."""
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    plant = Plant(
        length_preference=plant_length_preference,
        bots=plant_bots,
        latency_leak_ms=plant_latency_leak_ms,
        speed_preference=plant_speed_preference,
        fair_share=plant_fair_share,
        heterogeneity=plant_heterogeneity,
        origin_leak=plant_origin_leak,
        duplicates=plant_duplicates,
        judge_agreement=plant_judge_agreement,
    )
    with Progress(
        TextColumn("writing votes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("demo", total=votes)
        try:
            written = generate(url, votes, seed, win_rate, progress=lambda n: bar.advance(task, n), plant=plant)
        except DemoDataError as error:
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(1) from None
    planted = {k: v for k, v in vars(plant).items() if v not in (0.0, None)}
    typer.echo(
        f"Wrote {written:,} demo votes (seed {seed}, true handoff win rate {win_rate:g})"
        + (f"; planted: {', '.join(f'{k}={v:g}' for k, v in planted.items())}." if planted else ".")
    )
