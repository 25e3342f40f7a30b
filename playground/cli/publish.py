"""``handoff publish``: a folder ready for the Hugging Face Hub, pushed when a token is configured."""

from __future__ import annotations

from pathlib import Path

import typer

from db.models import Region
from db.session import ensure_migrated
from feedback.export.hub import write_folder
from playground.cli.export import filters_from
from playground.settings import get_settings


def publish(
    out: Path = typer.Option(..., "--out", help="Folder to write (data/ files and the dataset card README.md)."),
    push: str | None = typer.Option(
        None, "--push", help="Hub dataset repo to upload to, e.g. my-org/handoff-feedback."
    ),
    event: str | None = typer.Option(None, help="Only this event code."),
    region: Region | None = typer.Option(None, help="Only this region."),
) -> None:
    """Write a Hub-ready dataset folder (redacted, participant ids re-hashed); upload it with --push."""
    settings = get_settings()
    url = settings.resolved_database_url
    ensure_migrated(url)
    salt = settings.export_salt.get_secret_value().encode() if settings.export_salt else None
    folder = write_folder(
        url, out, filters_from(event, region, None, None), default_licence=settings.export_licence, salt=salt
    )
    typer.echo(f"Wrote {', '.join(f'{n} ({r:,} rows)' for n, r in folder.rows.items())} and {folder.readme}")
    if push is None:
        return
    from huggingface_hub import HfApi, get_token

    if not get_token():
        typer.echo(
            "No Hugging Face token is configured, so nothing was uploaded. To publish, log in "
            "(`hf auth login`, or set HF_TOKEN) and run:\n"
            f"  hf upload {push} {folder.path} . --repo-type dataset\n"
            f"or run `handoff publish --out {out} --push {push}` again.",
            err=True,
        )
        return
    api = HfApi()
    api.create_repo(push, repo_type="dataset", private=True, exist_ok=True)
    commit = api.upload_folder(repo_id=push, folder_path=folder.path, repo_type="dataset")
    typer.echo(f"Uploaded to {commit.commit_url} (a private dataset; make it public on the Hub when ready)")
