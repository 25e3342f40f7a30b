"""``handoff merge --from URL --into URL``: copy one region's (or kiosk's) research rows into another database."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from db.merge import merge as merge_databases


def merge(
    source: str = typer.Option(..., "--from", help="Database URL to copy from (left unchanged)."),
    target: str = typer.Option(..., "--into", help="Database URL to copy into (migrated: `handoff db upgrade`)."),
    show: int = typer.Option(20, help="How many conflicting rows to list."),
) -> None:
    """Copy events, participants, conversations, turns, answers, decisions, votes and ratings.

    Idempotent: rows are matched by stable uid, so a re-run adds nothing and completes an
    interrupted one. Conflicting rows are listed and left untouched in the target (exit status 1).
    """
    shown_from = make_url(source).render_as_string(hide_password=True)
    shown_into = make_url(target).render_as_string(hide_password=True)
    typer.echo(f"Merging {shown_from} into {shown_into}")
    try:
        report = merge_databases(source, target)
    except ValueError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    for table, count in report.counts.items():
        typer.echo(
            f"{table}: {count.copied} copied, {count.present} already there, "
            f"{count.conflicts} conflicting, {count.skipped} skipped (parent not copied)"
        )
    if report.conflicts:
        for conflict in report.conflicts[:show]:
            typer.echo(f"conflict: {conflict}", err=True)
        if len(report.conflicts) > show:
            typer.echo(f"… and {len(report.conflicts) - show} more", err=True)
        typer.echo(
            f"{len(report.conflicts)} conflicting rows were left as they are in the target; nothing was overwritten.",
            err=True,
        )
        raise typer.Exit(1)
