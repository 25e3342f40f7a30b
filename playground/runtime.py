"""Process-wide services shared by every Streamlit session: settings, database, engine, cloud.

Created once per process (module-level cache), so the model is loaded once and all sessions
share it; the CLI and tests use the same functions.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from playground.comparison import Comparison
from playground.engine.cloud import CloudClient
from playground.engine.local import LocalEngine
from playground.handoff.policies import get_policy
from playground.settings import Settings, get_settings

_engine_lock = threading.Lock()


_engines: dict[tuple[str, str, str], LocalEngine] = {}


def start_loading(settings: Settings | None = None) -> None:
    """Load and warm up the engine in the background, off the request path (call at start-up)."""
    threading.Thread(target=local_engine, args=(settings,), name="engine-loader", daemon=True).start()


def engine_ready(settings: Settings | None = None) -> bool:
    """True once the engine for these settings is loaded and warmed up (the page shows "warming up")."""
    settings = settings or get_settings()
    return (settings.local_model, settings.local_device, settings.local_dtype) in _engines


def local_engine(settings: Settings | None = None) -> LocalEngine:
    """The shared local engine for the configured model, loaded (and warmed up) on first use."""
    settings = settings or get_settings()
    key = (settings.local_model, settings.local_device, settings.local_dtype)
    with _engine_lock:
        if key not in _engines:
            engine = LocalEngine(settings)
            engine.warm_up()
            _engines[key] = engine
        return _engines[key]


@lru_cache(maxsize=1)
def _cloud(settings: Settings) -> CloudClient:
    return CloudClient(settings)


def cloud_client(settings: Settings | None = None) -> CloudClient:
    return _cloud(settings or get_settings())


def comparison_for(policy_name: str | None, threshold: float | None, settings: Settings | None = None) -> Comparison:
    """A comparison using the event's policy and threshold, or the settings' defaults."""
    settings = settings or get_settings()
    return Comparison(
        engine=local_engine(settings),
        cloud=cloud_client(settings),
        policy=get_policy(policy_name or settings.handoff_policy),
        threshold=settings.handoff_threshold if threshold is None else threshold,
        settings=settings,
    )
