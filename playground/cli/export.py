"""``handoff export``: researcher exports with a data card beside each file."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from db.models import Region
from db.session import ensure_migrated
from feedback.export import FORMATS, ExportFilters, ExportResult, count_conversations, write_export
from playground.settings import Settings, get_settings

Format = StrEnum("Format", {name: name for name in FORMATS})


def filters_from(
    event: str | None, region: Region | None, since: dt.datetime | None, until: dt.datetime | None
) -> ExportFilters:
    return ExportFilters(
        event=event,
        region=region.value if region else None,
        since=since.date() if since else None,
        until=until.date() if until else None,
    )


def export(
    fmt: Format = typer.Option(..., "--format", help="jsonl, csv, parquet, arena (FastChat) or dpo (TRL)."),
    out: Path = typer.Option(..., "--out", help="File to write; the data card goes to <out>.card.md."),
    event: str | None = typer.Option(None, help="Only this event code."),
    region: Region | None = typer.Option(None, help="Only this region."),
    since: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="From this day (UTC), inclusive."),
    until: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="To this day (UTC), inclusive."),
    no_redact: bool = typer.Option(False, "--no-redact", help="Keep PII in the text: internal use only."),
) -> None:
    """Export consented, visible feedback for researchers (PII redacted, participant ids re-hashed)."""
    settings = get_settings()
    url = settings.resolved_database_url
    ensure_migrated(url)
    filters = filters_from(event, region, since, until)
    total = count_conversations(url, filters)
    try:
        if "\x00" in str(out):
            raise OSError(f"{out!r} contains a NUL byte")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            raise IsADirectoryError(f"{out} is a folder; give a file name")
        result = _write(url, fmt, out, filters, no_redact, total, settings)
    except OSError as error:  # a path the operator can fix: say so, no traceback
        typer.echo(
            f"Error: cannot write the export to {str(out)!r}: {getattr(error, 'strerror', None) or error}", err=True
        )
        raise typer.Exit(1) from None
    typer.echo(f"Wrote {result.rows:,} rows to {result.path}")
    typer.echo(f"Data card: {result.card_path}")
    if no_redact:
        typer.echo("PII redaction was OFF: keep this file internal.", err=True)


def _write(
    url: str, fmt: Format, out: Path, filters: ExportFilters, no_redact: bool, total: int, settings: Settings
) -> ExportResult:
    with Progress(
        TextColumn("exporting conversations"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("export", total=total)
        result = write_export(
            url,
            fmt.value,
            out,
            filters,
            redact=not no_redact,
            progress=lambda n: bar.advance(task, n),
            salt=settings.export_salt_bytes,
            default_licence=settings.export_licence,
        )
    return result
