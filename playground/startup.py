"""Process start-up off the request path, so the first visitor gets a page at once.

Importing the services (torch, transformers, SQLAlchemy models, scikit-learn) takes seconds, and
tens of seconds on a busy machine; a Streamlit page that imports them at its top sends nothing
until they are loaded, so the first visit is a blank page. ``app.py`` draws a "warming up" page,
starts these imports in a background thread and reruns once they are done. Light on purpose:
this module imports nothing heavy itself.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"
# What the pages import at their top: loaded once per process, before any page runs.
SERVICES = ("playground.organizer_access", "playground.attendee_session", "playground.runtime")

_ready = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _load() -> None:
    try:
        for name in SERVICES:
            importlib.import_module(name)
        from playground.runtime import start_loading

        start_loading()  # the model loads and warms up in its own thread; pages say "warming up" meanwhile
    except Exception:  # the page's own import will raise it again, where a person sees it
        log.exception("Start-up imports failed")
    finally:
        _ready.set()


def start() -> None:
    """Begin loading the services in the background (idempotent; every session may call it)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_load, name="startup", daemon=True)
            _thread.start()


def ready() -> bool:
    """True once the services are imported: pages can import them without blocking."""
    return _ready.is_set()


def wait(timeout_s: float | None = None) -> bool:
    """Block until the services are imported (or ``timeout_s`` passes); True when they are."""
    start()
    return _ready.wait(timeout_s)


def streamlit_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The app process's environment: ``environ`` with OpenMP's threads told to sleep at their barriers.

    torch's intra-op threads spin while they wait by default. In the app the decoding thread shares the
    GIL with every page script and Streamlit's own loop, so it waits often, and the spinning threads
    then burn the cores the pages and the decoding need: with 8 attendees streaming at once on 2 cores
    the app made 1.7 tok/s spinning against 9.1 with ``OMP_WAIT_POLICY=PASSIVE`` (bench/README, "App
    streaming overhead"). Set before the process starts, as OpenMP reads it once. An operator's own
    ``OMP_WAIT_POLICY`` wins.
    """
    return {"OMP_WAIT_POLICY": "PASSIVE", **environ}


def streamlit_command(port: int, address: str) -> list[str]:
    """``streamlit run`` as attendees get it: headless, no usage stats, the toolbar in viewer mode (no
    "Deploy" button, no rerun or clear-cache items: the menu keeps only theme and print)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "none",  # tracebacks (SQL, paths, values) go to the server log, never to a browser
        "--server.fileWatcherType",
        "none",  # a served app never reloads its source, nor offers attendees a "rerun" prompt
        # No full gc.collect(2) after every script run (Streamlit's default): in this process (torch, transformers,
        # SQLAlchemy loaded) each one holds the GIL over every object, and every vote, click and ended turn is a run:
        # with 8 attendees streaming it was half the app's CPU, 35 -> 15.6 ms per token (bench/README.md, "Streamlit's
        # collection after each run"). Python's own generational collector still runs.
        "--runner.postScriptGC",
        "false",
    ]
