"""Process-wide services shared by every Streamlit session: settings, database, engine, cloud.

Created once per process (module-level cache), so the model is loaded once and all sessions
share it; the CLI and tests use the same functions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from playground.comparison import Comparison
from playground.engine.cloud import CloudClient
from playground.engine.contract import LocalModelEngine
from playground.engine.engines import engine_key, load_engine
from playground.engine.model_store import resolve_model
from playground.handoff.budget import EventBudget, ParticipantRateLimit, event_shadow_rate
from playground.handoff.policies import resolve_policy
from playground.handoff.router import trained_router
from playground.settings import Settings, get_settings

log = logging.getLogger(__name__)
_engine_lock = threading.Lock()


_engines: dict[tuple[str, ...], LocalModelEngine] = {}


def start_loading(settings: Settings | None = None) -> None:
    """Load and warm up the engine in the background, off the request path (call at start-up)."""
    threading.Thread(target=_load, args=(settings,), name="engine-loader", daemon=True).start()


def _load(settings: Settings | None) -> None:
    """The tokenizer every prompt is checked with first, then the engine: transformers is imported once, under
    ``context_window``'s lock, before the engine's own imports run beside the pages (see ``context_window``)."""
    try:
        context_window(settings)
    except Exception:  # noqa: BLE001 - a page asking for it again raises it where a person sees it
        log.exception("reading the local model's tokenizer failed")
    local_engine(settings)


def engine_ready(settings: Settings | None = None) -> bool:
    """True once the engine for these settings is loaded and warmed up (the page shows "warming up")."""
    settings = settings or get_settings()
    return engine_key(settings) in _engines


def local_engine(settings: Settings | None = None) -> LocalModelEngine:
    """The shared local engine (``HANDOFF_LOCAL_ENGINE``) for the configured model, loaded and warmed up on first use."""
    settings = settings or get_settings()
    key = engine_key(settings)
    with _engine_lock:
        if key not in _engines:
            engine = load_engine(settings)
            engine.warm_up()
            _engines[key] = engine
        return _engines[key]


@dataclass(frozen=True)
class ContextWindow:
    """How many tokens the local model reads at once, and its tokenizer to count a chat the way the engine does."""

    tokenizer: Any
    context_tokens: int

    def count(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the chat as the model sees it (chat template and generation prompt included)."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return len(encoded["input_ids"])


_windows: dict[tuple[str, str], ContextWindow] = {}
_windows_lock = threading.Lock()


def context_window(settings: Settings | None = None) -> ContextWindow:
    """The local model's context window, without waiting for the model itself to load (tokenizer and config only).

    transformers is imported under the lock: its lazy module is not thread-safe, and a page importing it while the
    engine loader did got "cannot import name 'AutoConfig' from 'transformers'" (its prompt was lost; seen in the
    browser and AppTest suites). The engine loader reads this first, so the names are resolved before it goes on.
    """
    settings = settings or get_settings()
    key = (settings.local_model, str(settings.model_cache_dir))
    with _windows_lock:
        if key not in _windows:
            from transformers import AutoConfig, AutoTokenizer

            path = resolve_model(settings.local_model, settings.model_cache_dir)
            config = AutoConfig.from_pretrained(path)
            _windows[key] = ContextWindow(AutoTokenizer.from_pretrained(path), int(config.max_position_embeddings))
        return _windows[key]


_cloud: tuple[Settings, CloudClient] | None = None


def cloud_client(settings: Settings | None = None) -> CloudClient:
    """One client (and connection pool) for the current settings object.

    Cached by identity, not by hash: Settings holds a price table (a dict), so it is unhashable.
    """
    global _cloud
    settings = settings or get_settings()
    if _cloud is None or _cloud[0] is not settings:
        _cloud = (settings, CloudClient(settings))
    return _cloud[1]


def comparison_for(
    policy_name: str | None,
    threshold: float | None,
    settings: Settings | None = None,
    *,
    event_id: int | None = None,
) -> Comparison:
    """A comparison using the event's policy and threshold, or the settings' defaults.

    With ``event_id`` the event's cloud budget and shadow rate apply (pass it from pages). A policy
    that cannot run here (untrained router, self-handoff without tool calls) falls back to
    ``handoff_fallback_policy``, logged and recorded with every decision.
    """
    settings = settings or get_settings()
    engine = local_engine(settings)
    policy, note = resolve_policy(policy_name, settings, engine)
    url = settings.resolved_database_url
    return Comparison(
        engine=engine,
        cloud=cloud_client(settings),
        policy=policy,
        threshold=settings.handoff_threshold if threshold is None else threshold,
        settings=settings,
        budget=EventBudget(url, event_id) if event_id is not None else None,
        rate_limit=ParticipantRateLimit(
            settings.cloud_rate_limit,
            storage_uri=settings.rate_limit_storage.get_secret_value(),
            prefix=settings.rate_limit_prefix,
        ),
        shadow_rate=event_shadow_rate(url, event_id) if event_id is not None else None,
        router=trained_router(settings),
        policy_note=note,
    )
