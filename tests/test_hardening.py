"""Review findings on what reaches a browser, a log or the network: error details, bound values, addresses."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from db.models import Event
from db.session import session_scope
from feedback.capture import validate_prompt
from feedback.errors import FeedbackRejected
from feedback.votes import validate_comment
from playground.cli.serve import streamlit_command
from playground.i18n import Translator
from playground.settings import Settings
from playground.turn_runner import TurnRunner
from tests.conftest import ROOT
from tests.db_outage import database_unavailable

SECRET = "s3cret-value-in-a-row"


def test_database_errors_never_carry_the_values_bound(db_url: str) -> None:
    with session_scope(db_url) as session:
        session.add(Event(code="DUP-1", name=SECRET, region="sf", city="SF", timezone="UTC"))
    with pytest.raises(IntegrityError) as caught, session_scope(db_url) as session:
        session.add(Event(code="DUP-1", name=SECRET, region="sf", city="SF", timezone="UTC"))
    assert SECRET not in str(caught.value)


def test_handoff_serve_hides_error_details_and_binds_loopback_by_default() -> None:
    command = streamlit_command(Settings())
    assert command[command.index("--client.showErrorDetails") + 1] == "none"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "public_url", "warned"),
    [
        ("127.0.0.1", None, False),
        ("0.0.0.0", None, True),
        ("0.0.0.0", "http://play.example.org", True),
        ("0.0.0.0", "https://play.example.org", False),
    ],
)
def test_start_up_warns_when_served_in_clear_beyond_loopback(
    organizer_env: Settings, monkeypatch: pytest.MonkeyPatch, host: str, public_url: str | None, warned: bool
) -> None:
    from playground.cli import app as cli
    from playground.cli import serve as serve_module
    from playground.settings import get_settings

    monkeypatch.setenv("HANDOFF_HOST", host)
    if public_url:
        monkeypatch.setenv("HANDOFF_PUBLIC_URL", public_url)
    monkeypatch.setenv("HANDOFF_CLOUD_BASE_URL", "https://user:pa55word@cloud.example.org:8443/v1")
    get_settings.cache_clear()
    started: list[list[str]] = []
    environments: list[dict[str, str]] = []
    # only the process start is replaced: everything up to it (migration check, warnings) runs for real
    monkeypatch.setattr(serve_module, "prepare_model", lambda: None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(
        serve_module.subprocess, "call", lambda command, env: started.append(command) or environments.append(env) or 0
    )
    result = CliRunner().invoke(cli, ["serve"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert ("WARNING: serving plain HTTP" in result.output) == warned
    assert "pa55word" not in result.output and "Cloud: cloud.example.org:8443" in result.output
    assert started and started[0][started[0].index("--server.address") + 1] == host
    assert environments[0]["OMP_WAIT_POLICY"] == "PASSIVE"  # the app's torch threads sleep at their barriers


def test_the_cloud_host_recorded_never_holds_url_credentials() -> None:
    settings = Settings(cloud_base_url="https://key:sk-abc123@proxy.example.org:8443/v1")
    assert settings.cloud_host == "proxy.example.org:8443"
    assert Settings(cloud_base_url="http://127.0.0.1:8766/v1").cloud_host == "127.0.0.1:8766"


@pytest.mark.parametrize("validate", [lambda t: validate_prompt(t, 100), lambda t: validate_comment(t, 100)])
def test_nul_characters_get_a_message_instead_of_a_database_error(validate) -> None:  # noqa: ANN001
    with pytest.raises(FeedbackRejected) as refused:
        validate("hello\x00world")
    assert refused.value.key == "errors.nul_character" and "NUL" in Translator("en").error(refused.value)


def test_a_failed_turn_tells_the_page_only_that_it_failed() -> None:
    def explode():  # noqa: ANN202
        raise RuntimeError(f"SELECT * FROM organizers WHERE password = '{SECRET}'")
        yield

    runner = TurnRunner("Hi", explode, lambda record: 1).start()
    deadline = time.monotonic() + 30
    while (view := runner.snapshot()).state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert view.state == "failed" and view.error == "RuntimeError"


@pytest.mark.parametrize("page", ["views/organizer_signin.py", "views/attendee.py"])
def test_a_database_down_at_page_load_gets_a_message_not_a_traceback(organizer_env: Settings, page: str) -> None:
    url = organizer_env.resolved_database_url
    with database_unavailable(url):
        at = AppTest.from_file(str(ROOT / "playground" / page), default_timeout=120).run()
    assert not at.exception, at.exception
    assert "database" in at.error[0].value.lower() and "try again" in at.error[0].value.lower()
    with session_scope(url) as session:  # and it is back afterwards
        assert session.scalar(select(Event.id)) is None
