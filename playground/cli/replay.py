"""``handoff replay``: recompute handoff decisions at other thresholds from stored scores."""

from __future__ import annotations

import typer

from db.session import ensure_migrated
from feedback.replay import SWEEP, ReplayError, calibrate, default_policy, load_turns, replay_database
from playground.cli.export import Region, filters_from
from playground.settings import get_settings


def replay(
    threshold: list[float] = typer.Option([], "--threshold", "-t", help="Threshold to replay (repeatable)."),
    sweep: bool = typer.Option(False, "--sweep", help="Replay thresholds 0.00 … 1.00 in steps of 0.05."),
    policy: str | None = typer.Option(None, help="Policy whose stored scores to replay (default: the live one)."),
    event: str | None = typer.Option(None, help="Only this event code."),
    region: Region | None = typer.Option(None, help="Only this region."),
    target_handoff_rate: float | None = typer.Option(
        None, help="Print the threshold that hands off this share of the stored turns (0…1)."
    ),
    budget_per_1000: float | None = typer.Option(
        None, help="Print the lowest threshold whose replayed cloud cost per 1,000 prompts fits this budget."
    ),
) -> None:
    """Handoff rate, estimated win rate and cost per 1,000 prompts at each threshold, or the threshold
    that meets a handoff share or a budget."""
    if not threshold and not sweep and target_handoff_rate is None and budget_per_1000 is None:
        typer.echo(
            "Give --threshold T (repeatable), --sweep, --target-handoff-rate R or --budget-per-1000 X.", err=True
        )
        raise typer.Exit(2)
    url = get_settings().resolved_database_url
    ensure_migrated(url)
    if target_handoff_rate is not None or budget_per_1000 is not None:
        try:
            table = load_turns(url, filters_from(event, region, None, None))
            chosen = calibrate(
                table,
                policy or default_policy(table),
                target_handoff_rate=target_handoff_rate,
                budget_per_1000=budget_per_1000,
            )
        except ReplayError as error:
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(1) from None
        p = chosen.point
        win = f"{p.win_rate:.3f}" if p.win_rate is not None else "n/a"
        typer.echo(
            f"policy {chosen.policy}, target {chosen.target}: threshold {chosen.threshold:.6g} "
            f"(handoff rate {p.handoff_rate:.4f}, est. win rate {win}, cost/1k {p.cost_per_1000:.4f})"
        )
        if not threshold and not sweep:
            return
    thresholds = [*threshold, *(SWEEP if sweep else ())]
    try:
        result = replay_database(url, filters_from(event, region, None, None), policy, thresholds)
    except ReplayError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    live = ", ".join(f"{t:g}" for t in result.live_thresholds) or "none"
    rate = f"{result.live_handoff_rate:.4f}" if result.live_handoff_rate is not None else "n/a"
    typer.echo(
        f"policy {result.policy}: {result.turns:,} turns, {result.voted:,} voted; "
        f"live threshold {live}, live handoff rate {rate}"
    )
    typer.echo(f"{'threshold':>9}  {'handoff':>7}  {'win rate':>8}  {'gain/vote':>9}  {'cost/1k':>9}  {'imputed':>7}")
    for p in result.points:
        win = f"{p.win_rate:.3f}" if p.win_rate is not None else "n/a"
        mark = "  <- live" if p.threshold in result.live_thresholds else ""
        typer.echo(
            f"{p.threshold:>9.3f}  {p.handoff_rate:>7.4f}  {win:>8}  {p.net_gain:>+9.4f}  "
            f"{p.cost_per_1000:>9.4f}  {p.imputed_share:>7.1%}{mark}"
        )
    best = result.recommended
    if best is not None:
        typer.echo(f"recommended threshold: {best.threshold:g} (most quality gained, cheapest among near-equal)")
