"""``handoff router …``: train the prompt router from the votes in the configured database."""

from __future__ import annotations

import typer

from db.session import ensure_migrated
from playground.handoff.router import RouterNotTrainable, router_path, train_router
from playground.settings import get_settings

app = typer.Typer(help="The router handoff policy.", no_args_is_help=True)


@app.command("train")
def train() -> None:
    """Fit the router on voted prompts (handoff answer won = positive) and save it to the model cache."""
    settings = get_settings()
    url = settings.resolved_database_url
    ensure_migrated(url)
    try:
        model = train_router(url, settings)
    except RouterNotTrainable as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Router {model.version} trained on {model.examples} voted prompts ({model.positives} where handoff won); "
        f"training accuracy {model.train_accuracy:.2f}. Saved to {router_path(settings)}."
    )
    typer.echo("Use it with HANDOFF_HANDOFF_POLICY=router (or an event's policy).")
