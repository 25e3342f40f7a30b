"""After a full run with known secret values (cloud API key, organizer password, export salt), none
of them appears in the database, the logs, the exports, the report or any page.

The run: migrate and create an event (CLI), an attendee joins, prompts (the cloud is called with
the key), votes and comments (AppTest); the organizer signs in and opens every page, builds the
report and the exports there; the CLI writes every export format and the report.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from playground.engine.model_store import resolve_model
from playground.settings import Settings, get_settings
from tests.conftest import MODEL_CACHE, ROOT, feedback_key, settings_from_env
from tests.test_hostile_input import run_cli

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

API_KEY = f"sk-proj-{secrets.token_hex(20)}"
PASSWORD = f"organizer-{secrets.token_hex(8)}"
SALT = f"salt-{secrets.token_hex(12)}"
PARTICIPANT_SECRET = f"participant-{secrets.token_hex(16)}"
SECRETS = {
    "API key": API_KEY,
    "organizer password": PASSWORD,
    "export salt": SALT,
    "participant secret": PARTICIPANT_SECRET,
}


def elements(at: AppTest) -> list[str]:
    """Everything the page sends to the browser: each element's message (values, labels, options, help)."""

    def walk(node):  # noqa: ANN001, ANN202 - AppTest's element tree
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return [str(node.proto) for node in walk(at._tree) if getattr(node, "proto", None) is not None]


@pytest.fixture
def secret_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, standin: Settings, empty_db_url: str
) -> Iterator[Settings]:
    """Known secrets and an empty database of each kind (the run migrates it; SQLite's file is in tmp_path)."""
    env = {
        "DATABASE_URL": empty_db_url,
        "HANDOFF_DATA_DIR": str(tmp_path / "data"),
        "HANDOFF_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "HANDOFF_CONFIG": str(tmp_path / "none.toml"),
        "HANDOFF_MAX_NEW_TOKENS": "8",
        "HANDOFF_CLOUD_BASE_URL": f"http://{standin.standin_host}:{standin.standin_port}/v1",
        "HANDOFF_CLOUD_MODEL": resolve_model("bundled:smollm2", MODEL_CACHE),
        "HANDOFF_ORGANIZER_PASSWORD": PASSWORD,
        "HANDOFF_EXPORT_SALT": SALT,
        "HANDOFF_PARTICIPANT_SECRET": PARTICIPANT_SECRET,
    }
    next(settings_from_env(monkeypatch, env))
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # settings_from_env removes any real key; ours is known
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_no_secret_reaches_the_database_logs_exports_report_or_pages(secret_env: Settings, tmp_path: Path) -> None:
    settings = secret_env
    assert settings.cloud_api_key == API_KEY  # the run really carries the secrets
    log_file = tmp_path / "app.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.INFO)  # what an operator's log holds (libraries' DEBUG dumps are not ours)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    shown: list[str] = []
    outputs: list[str] = []
    try:
        for args in (
            ("db", "upgrade"),
            (
                "event",
                "create",
                "--code",
                "SEC-1",
                "--name",
                "Secret test",
                "--region",
                "sf",
                "--city",
                "SF",
                "--threshold",
                "0",
            ),
        ):
            code, output = run_cli(*args)
            assert code == 0, output
            outputs.append(output)

        attendee = AppTest.from_file(str(ROOT / "playground" / "views" / "attendee.py"), default_timeout=600)
        attendee.query_params["event"] = "SEC-1"
        attendee.run()
        attendee.button(key="consent_accept").click().run()
        attendee.chat_input(key="prompt").set_value("Name a colour.").run()
        assert not attendee.exception, attendee.exception
        if attendee.segmented_control:  # the panes differ: the pairwise vote
            attendee.segmented_control(key=feedback_key(attendee, "winner")).set_value("a")
        else:  # the two answers came out identical: one rating for both
            attendee.feedback(key=feedback_key(attendee, "stars_both")).set_value(3)
        attendee.text_area(key=feedback_key(attendee, "comment")).input("fine")
        next(b for b in attendee.button if b.key == "save_feedback").click().run()
        attendee.button(key="reveal").click().run()
        assert not attendee.exception, attendee.exception
        shown += elements(attendee)

        organizer = AppTest.from_file(str(ROOT / "playground" / "app.py"), default_timeout=600).run()
        organizer.switch_page("views/organizer_signin.py").run()
        organizer.text_input(key="username").input(settings.organizer_admin_username)
        organizer.text_input(key="password").input(PASSWORD)
        next(b for b in organizer.button if b.label == "Sign in").click().run()
        assert not organizer.error, [e.value for e in organizer.error]
        for page in ("overview", "regions", "comments", "events", "exports"):
            organizer.switch_page(f"views/organizer_{page}.py").run()
            assert not organizer.exception, organizer.exception
            shown += elements(organizer)
        organizer.button(key="build_report").click().run()
        shown += elements(organizer)

        exports = tmp_path / "exports"
        for fmt, suffix in (
            ("jsonl", "jsonl"),
            ("csv", "csv"),
            ("parquet", "parquet"),
            ("arena", "json"),
            ("dpo", "jsonl"),
        ):
            code, output = run_cli("export", "--format", fmt, "--out", str(exports / f"all.{suffix}"))
            assert code == 0, output
            outputs.append(output)
        code, output = run_cli("report", "--out", str(tmp_path / "report"), "--rounds", "10")
        assert code == 0, output
        outputs.append(output)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()

    url = settings.resolved_database_url
    if url.startswith("postgresql"):  # the whole database as text, searched like the files
        plain = url.replace("+psycopg", "")
        dump = subprocess.run(["pg_dump", "--no-owner", plain], capture_output=True, check=True).stdout
        assert b"Name a colour." in dump  # the dump holds the run
        (tmp_path / "database.sql").write_bytes(dump)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # database, WAL, log, exports, cards, report
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "report.html" for p in files)
    found = []
    for name, value in SECRETS.items():
        needle = value.encode()
        found += [f"{name} in {p.relative_to(tmp_path)}" for p in files if needle in p.read_bytes()]
        found += [f"{name} on a page" for text in shown if value in text]
        found += [f"{name} in CLI output" for text in outputs if value in text]
    assert found == []
