"""``handoff judge``: an LLM judge on an event's voted pairs, stored apart from the human votes."""

from __future__ import annotations

import openai
import typer

from db.session import ensure_migrated
from feedback.judge import judge_pairs, openai_ask, pairs_to_judge
from playground.engine.cloud import CloudClient
from playground.settings import get_settings


def judge(
    event: str = typer.Option(..., help="Event code whose voted pairs to judge."),
    model: str | None = typer.Option(None, help="Judge model (default: the cloud model)."),
    limit: int | None = typer.Option(None, min=1, help="Judge at most this many pairs (each asked twice)."),
    max_tokens: int | None = typer.Option(None, min=1, help="Longest judge reply (default: max_new_tokens)."),
) -> None:
    """Ask the judge about each not-yet-judged pair, in both orders; print verdicts, tokens and cost."""
    settings = get_settings()
    url = settings.resolved_database_url
    ensure_migrated(url)
    cloud = CloudClient(settings, model)
    pairs = pairs_to_judge(url, event, cloud.model, limit)
    if not pairs:
        typer.echo(f"Nothing to judge for {event.strip().upper()} with {cloud.model} (no new voted handoff pairs).")
        return
    try:
        run = judge_pairs(
            url,
            pairs,
            cloud.model,
            openai_ask(cloud.openai, cloud.model, max_tokens or settings.max_new_tokens),
            lambda tokens_in, tokens_out: settings.cloud_prices.cost(cloud.model, tokens_in, tokens_out),
            settings.cloud_host,
        )
    except openai.APIError as error:  # verdicts stored so far stay; a rerun goes on where this stopped
        typer.echo(
            f"Error: the judge at {settings.cloud_host} failed ({type(error).__name__}); verdicts so far are kept, "
            "run the command again to go on.",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"Judged {run.pairs:,} pairs ({run.verdicts:,} verdicts, {run.unparsed:,} without a verdict) with "
        f"{cloud.model}: {run.tokens_in + run.tokens_out:,} tokens, cost {run.cost} {settings.cloud_prices.currency}."
    )
