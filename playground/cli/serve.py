"""``handoff serve``: the cloud stand-in (unless a real cloud is configured) and the Streamlit app."""

from __future__ import annotations

import os
import subprocess

import typer

from db.session import DatabaseNotMigrated, ensure_migrated
from playground import startup
from playground.engine import llamacpp_server
from playground.engine import standin as standin_server
from playground.engine.llamacpp import EngineConfigError, LlamaCppMissing, require_llama_cpp
from playground.engine.model_store import resolve_model
from playground.settings import Settings, get_settings


def prepare_model() -> None:
    """Convert the bundled GGUF model into the cache once (make run does this)."""
    settings = get_settings()
    typer.echo(f"Local model ready at {resolve_model(settings.local_model, settings.model_cache_dir)}")


def standin() -> None:
    """Run only the OpenAI-compatible cloud stand-in, in the foreground."""
    settings = get_settings()
    raise typer.Exit(subprocess.call(standin_server.standin_command(settings)))


def streamlit_command(settings: Settings) -> list[str]:
    """``streamlit run`` of the app as ``handoff serve`` starts it (see ``playground.startup.streamlit_command``)."""
    return startup.streamlit_command(settings.port, settings.host)


def llama_server() -> None:
    """Run only llama.cpp's OpenAI-compatible server for the openai engine, in the foreground (one, at the
    first base URL; ``handoff serve`` starts one per CPU)."""
    settings = get_settings()
    try:
        command = llamacpp_server.server_command(settings, settings.local_base_urls[0])
    except (LlamaCppMissing, EngineConfigError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(subprocess.call(command))


def start_local_servers(settings: Settings) -> tuple[list[subprocess.Popen[bytes]], tuple[str, ...]]:
    """For the openai engine on local URLs: start llama.cpp's servers (one per CPU) where nobody answers yet; returns
    them and every URL the app is to use (none: leave its settings as they are). Where the first URL already
    answers (another replica's servers, your own vLLM), nothing is started and the app uses those that answer."""
    if settings.local_engine != "openai" or not llamacpp_server.is_local(settings):
        return [], ()
    urls = llamacpp_server.replica_urls(settings)
    if llamacpp_server.is_up(urls[0]):
        return [], (urls[0], *(url for url in urls[1:] if llamacpp_server.is_up(url)))
    threads = llamacpp_server.server_threads(settings)
    hosts = llamacpp_server.served_by(settings, urls).local_host
    typer.echo(f"Starting {len(urls)} llama.cpp server(s) of {threads} thread(s) each on {hosts} …")
    try:
        started = llamacpp_server.start_llama_servers(settings, settings.data_dir / "logs")
    except (LlamaCppMissing, EngineConfigError, llamacpp_server.LlamaServerFailed) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    return started, urls


def serve() -> None:
    """Start the cloud stand-in if needed, then the Streamlit app; Ctrl+C stops both."""
    settings = get_settings()
    try:
        ensure_migrated(settings.resolved_database_url)
    except DatabaseNotMigrated as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    prepare_model()
    if settings.local_engine == "llamacpp":
        try:
            llamacpp_server.gguf_path(settings)
            require_llama_cpp()
        except (LlamaCppMissing, EngineConfigError) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
    local_servers, urls = start_local_servers(settings)
    served_env: dict[str, str] = {}
    if urls:
        settings = llamacpp_server.served_by(settings, urls)
        served_env["HANDOFF_LOCAL_BASE_URL"] = settings.local_base_url
    process = None
    if settings.uses_standin and not standin_server.is_up(settings):
        typer.echo(f"Starting the cloud stand-in on {settings.resolved_cloud_base_url} …")
        process = standin_server.start_standin(settings, settings.data_dir / "logs" / "standin.log")
    engine_at = f" at {settings.local_host}" if settings.local_engine == "openai" else ""
    typer.echo(f"Local engine: {settings.local_engine}{engine_at} ({settings.local_engine_reason})")
    if settings.local_engine == "transformers":
        typer.echo(f"Local device: {settings.local_device} ({settings.local_device_reason})")
    typer.echo(f"Cloud: {settings.cloud_host}")
    typer.echo(f"Open http://localhost:{settings.port}")
    if settings.served_in_clear_publicly:
        typer.echo(
            f"WARNING: serving plain HTTP on {settings.host}: organizer passwords and attendee prompts cross the "
            "network in clear. Put a TLS reverse proxy in front and set HANDOFF_PUBLIC_URL=https://… "
            "(README, 'Serving on a network'), or bind HANDOFF_HOST=127.0.0.1.",
            err=True,
        )
    command = streamlit_command(settings)
    try:
        raise typer.Exit(subprocess.call(command, env=startup.streamlit_environment({**os.environ, **served_env})))
    finally:
        for started in (process, *local_servers):
            if started is not None:
                started.terminate()
                started.wait(timeout=10)
