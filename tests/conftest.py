"""Real parts only: SQLite and PostgreSQL databases, the bundled model, a real stand-in server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The suite runs the transformers engine whatever the CPU (auto would pick llama.cpp on an AVX2-only machine and the
# answers would differ between machines); the engine tests name their engine, tests/test_device.py checks auto.
os.environ.setdefault("HANDOFF_LOCAL_ENGINE", "transformers")

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / "data" / "models"  # shared with `make run`: the bundled model is converted once
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

from db import session as db_session  # noqa: E402
from playground import settings as settings_module  # noqa: E402
from playground.settings import Settings  # noqa: E402
from playground.startup import streamlit_command, streamlit_environment  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def standin_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory, standin_port: int) -> Iterator[Settings]:
    """The real OpenAI-compatible cloud stand-in (`transformers serve`) on 127.0.0.1."""
    from playground.engine.standin import start_standin

    settings = Settings(model_cache_dir=MODEL_CACHE, standin_port=standin_port)
    process = start_standin(settings, tmp_path_factory.mktemp("standin") / "standin.log")
    yield settings
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"hp_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        db_session.get_engine(url).dispose()
        db_session.get_engine.cache_clear()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, private to the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A migrated database of each kind."""
    db_session.upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'test.db'}"
    db_session.upgrade(url)
    return url


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, standin: Settings, db_url: str) -> Iterator[Settings]:
    """Environment for code that reads settings itself (pages, CLI): a fresh migrated database of each kind
    (``db_url``), the real stand-in as the cloud, given as long per call as a loaded CPU needs (a slow
    stand-in is not a failing cloud: the cloud's failures have their own tests)."""
    env = {
        "DATABASE_URL": db_url,
        "HANDOFF_DATA_DIR": str(tmp_path),
        "HANDOFF_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "HANDOFF_STANDIN_PORT": str(standin.standin_port),
        "HANDOFF_MAX_NEW_TOKENS": "24",
        "HANDOFF_CLOUD_TIMEOUT_S": "300",
        "HANDOFF_CONFIG": str(tmp_path / "none.toml"),
        # every fresh database numbers its participants from 1, and the in-memory cloud-call limiter lives
        # as long as the test process: a prefix per test keeps one test's calls from counting in the next
        # (a quiet full run made >10 calls a minute for "participant 1" and the budget test saw rate_limit)
        "HANDOFF_RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
    }
    yield from settings_from_env(monkeypatch, env)


ORGANIZER_PASSWORD = "organizer-test-password"


@pytest.fixture
def organizer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Iterator[Settings]:
    """Environment for the organizer pages and CLI (no model, no stand-in): a fresh migrated database of
    each kind and the bootstrap admin password ``ORGANIZER_PASSWORD``."""
    url = db_url
    env = {
        "DATABASE_URL": url,
        "HANDOFF_DATA_DIR": str(tmp_path),
        "HANDOFF_CONFIG": str(tmp_path / "none.toml"),
        "HANDOFF_ORGANIZER_PASSWORD": ORGANIZER_PASSWORD,
        "HANDOFF_ORGANIZER_LOCKOUT_AFTER": "3",
    }
    yield from settings_from_env(monkeypatch, env)


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[Settings]:
    """Set the environment (without a real OpenAI key) and yield the settings read from it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings_module.get_settings.cache_clear()
    yield settings_module.get_settings()
    settings_module.get_settings.cache_clear()


@contextmanager
def served(command: list[str], port: int, log_path: Path, env: dict[str, str], timeout_s: float = 120) -> Iterator[str]:
    """Run ``command``, a Streamlit server on ``port`` (``streamlit run``, ``handoff serve``), in its own process
    group; yields its URL once its health check answers, and stops the whole group (``handoff serve``'s Streamlit
    child too) when the block ends."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.5)
        yield base
    finally:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def streamlit_app(log_path: Path) -> Iterator[str]:
    """``streamlit run playground/app.py`` on a free port, in the environment ``handoff serve`` gives it; yields its URL."""
    port = free_port()
    with served(streamlit_command(port, "127.0.0.1"), port, log_path, streamlit_environment(os.environ)) as base:
        yield base


# Streamlit's app root once a script run has ended: elements the run did not draw (a previous round's feedback
# widgets, keyed per round) are gone only then, so a test clicks a widget after waiting for this.
RUN_DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"
CHROMIUM = "/usr/bin/chromium"  # Debian's (`make browser`): Playwright cannot download browsers here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def chromium():  # noqa: ANN201 - a playwright Browser
    """Headless Debian Chromium driven by Playwright; skipped with a hint when it is not installed."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make browser`")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def feedback_key(at, name: str) -> str:  # noqa: ANN001 - a streamlit AppTest
    """The attendee page's widget key of feedback field ``name`` (``winner``, ``stars_a``, ``comment``…) in the
    latest round: the keys are per round (``BlindComparison.feedback_key``)."""
    return at.session_state["comparison"].feedback_key(name)
