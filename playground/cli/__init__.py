"""The ``handoff`` command: one entry point for operators, one small module per subject."""

from __future__ import annotations

import typer

from playground.cli import db as db_commands
from playground.cli import demo as demo_commands
from playground.cli import events as event_commands
from playground.cli import export as export_commands
from playground.cli import judge as judge_commands
from playground.cli import merge as merge_commands
from playground.cli import organizers as organizer_commands
from playground.cli import publish as publish_commands
from playground.cli import replay as replay_commands
from playground.cli import report as report_commands
from playground.cli import router as router_commands
from playground.cli import serve as serve_commands

app = typer.Typer(help="Handoff Playground: operate the side-by-side LLM playground.", no_args_is_help=True)
app.add_typer(db_commands.app, name="db")
app.add_typer(event_commands.app, name="event")
app.add_typer(organizer_commands.app, name="organizer")
app.add_typer(router_commands.app, name="router")
app.command("serve")(serve_commands.serve)
app.command("standin")(serve_commands.standin)
app.command("llama-server")(serve_commands.llama_server)
app.command("prepare-model")(serve_commands.prepare_model)
app.command("export")(export_commands.export)
app.command("publish")(publish_commands.publish)
app.command("merge")(merge_commands.merge)
app.command("replay")(replay_commands.replay)
app.command("report")(report_commands.report)
app.command("judge")(judge_commands.judge)
app.command("demo-data")(demo_commands.demo_data)


def main() -> None:
    """Console entry point: errors a person can fix are printed as one line, not a traceback."""
    from db.queries import UnknownEvent
    from db.session import DatabaseNotMigrated
    from playground.engine.model_store import BundledModelMissing

    try:
        app()
    except (DatabaseNotMigrated, UnknownEvent, BundledModelMissing) as error:
        typer.echo(f"Error: {error}", err=True)
        raise SystemExit(1) from None
