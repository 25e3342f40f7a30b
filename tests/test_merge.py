"""``handoff merge``: regions kept apart, merged for research, idempotently and without silent overwrites."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

from db import session as db_session
from db.merge import MERGED, merge
from db.models import Conversation, Event, Participant, Turn, Vote
from feedback.demo_data import generate
from playground.cli import app
from tests.conftest import ROOT, _postgres_database
from tests.organizer_data import assert_rollups_match_rows

VOTES = 40


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = next(gen := _postgres_database())
    db_session.upgrade(url)
    yield url
    gen.close()


@pytest.fixture
def postgres_source() -> Iterator[str]:
    url = next(gen := _postgres_database())
    db_session.upgrade(url)
    yield url
    gen.close()


def _region(url: str, seed: int, suffix: str) -> str:
    """A migrated database filled like one region's event (demo data; event codes made distinct)."""
    db_session.upgrade(url)
    generate(url, VOTES, seed=seed)
    with db_session.session_scope(url) as session:
        session.execute(update(Event).values(code=Event.code + suffix))
    return url


def _uids(url: str) -> dict[str, set[str]]:
    with db_session.get_engine(url).connect() as connection:
        return {table.name: set(connection.scalars(select(table.c.uid))) for table in MERGED}


def _links(url: str) -> set[tuple[str, str, str, str, str]]:
    """Each vote as (vote, turn, conversation, participant, event) uids: the relations a merge must keep."""
    with db_session.session_scope(url) as session:
        rows = session.execute(
            select(Vote.uid, Turn.uid, Conversation.uid, Participant.uid, Event.uid)
            .join(Turn, Vote.turn_id == Turn.id)
            .join(Conversation, Vote.conversation_id == Conversation.id)
            .join(Participant, Vote.participant_id == Participant.id)
            .join(Event, Vote.event_id == Event.id)
        )
        return {tuple(row) for row in rows}


def test_sqlite_region_merges_into_postgresql_once(tmp_path: Path, postgres_url: str) -> None:
    source = _region(f"sqlite:///{tmp_path / 'kiosk.db'}", seed=1, suffix="-KIOSK")
    first = merge(source, postgres_url)
    assert first.conflicts == []
    assert _uids(postgres_url) == _uids(source)
    assert _links(postgres_url) == _links(source)
    assert first.copied == sum(len(uids) for uids in _uids(source).values())

    again = merge(source, postgres_url)
    assert again.copied == 0 and again.conflicts == []
    assert sum(count.present for count in again.counts.values()) == first.copied
    assert _uids(postgres_url) == _uids(source)
    assert_rollups_match_rows(postgres_url)


def test_two_regions_merge_into_one_postgresql(tmp_path: Path, postgres_source: str, postgres_url: str) -> None:
    europe = _region(postgres_source, seed=2, suffix="-EU")
    kiosk = _region(f"sqlite:///{tmp_path / 'kiosk.db'}", seed=3, suffix="-KIOSK")
    assert merge(europe, postgres_url).conflicts == []
    assert merge(kiosk, postgres_url).conflicts == []
    merged, expected = _uids(postgres_url), {t: _uids(europe)[t] | _uids(kiosk)[t] for t in _uids(europe)}
    assert merged == expected
    assert _links(postgres_url) == _links(europe) | _links(kiosk)
    assert merge(europe, postgres_url).copied == 0
    assert_rollups_match_rows(postgres_url)  # rows copied in bulk: the merged events' rollups are recomputed


def test_changed_row_is_reported_and_never_overwritten(tmp_path: Path, postgres_url: str) -> None:
    source = _region(f"sqlite:///{tmp_path / 'kiosk.db'}", seed=4, suffix="-KIOSK")
    merge(source, postgres_url)
    with db_session.session_scope(source) as session:
        vote = session.scalars(select(Vote).order_by(Vote.id).limit(1)).one()
        changed_uid, old_winner = vote.uid, vote.winner
        vote.winner = "tie" if old_winner != "tie" else "both_bad"
    report = merge(source, postgres_url)
    assert [(c.table, c.uid) for c in report.conflicts] == [("votes", changed_uid)]
    assert "winner" in report.conflicts[0].reason
    with db_session.session_scope(postgres_url) as session:
        assert session.scalar(select(Vote.winner).where(Vote.uid == changed_uid)) == old_winner


def test_taken_event_code_is_a_conflict_and_its_rows_stay_out(tmp_path: Path, postgres_url: str) -> None:
    first = _region(f"sqlite:///{tmp_path / 'a.db'}", seed=5, suffix="-X")
    second = _region(f"sqlite:///{tmp_path / 'b.db'}", seed=6, suffix="-X")  # same codes, other events
    merge(first, postgres_url)
    before = _uids(postgres_url)
    report = merge(second, postgres_url)
    assert {c.table for c in report.conflicts} == {"events"}
    assert all("code=" in c.reason for c in report.conflicts)
    assert report.copied == 0 and report.counts["votes"].skipped == len(_uids(second)["votes"])
    assert _uids(postgres_url) == before


def test_interrupted_merge_is_completed_by_a_rerun(tmp_path: Path, postgres_url: str) -> None:
    source = _region(f"sqlite:///{tmp_path / 'kiosk.db'}", seed=7, suffix="-KIOSK")
    killer = textwrap.dedent(
        f"""
        import os, signal
        from db.merge import merge
        def progress(table, done):
            if table == "turns":
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: like a power cut mid-merge
        merge({source!r}, {postgres_url!r}, chunk=7, progress=progress)
        """
    )
    process = subprocess.run([sys.executable, "-c", killer], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, check=False)
    assert process.returncode == -9
    partial = _uids(postgres_url)
    assert 0 < len(partial["turns"]) < len(_uids(source)["turns"]) and not partial["votes"]

    report = merge(source, postgres_url)
    assert report.conflicts == []
    assert _uids(postgres_url) == _uids(source)
    assert _links(postgres_url) == _links(source)
    with db_session.session_scope(postgres_url) as session:  # nothing twice
        assert session.scalar(select(func.count()).select_from(Turn)) == len(_uids(source)["turns"])


def test_cli_merge_reports_counts_and_hides_the_password(tmp_path: Path, postgres_url: str) -> None:
    source = _region(f"sqlite:///{tmp_path / 'kiosk.db'}", seed=8, suffix="-KIOSK")
    target = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    runner = CliRunner()
    first = runner.invoke(app, ["merge", "--from", source, "--into", target])
    assert first.exit_code == 0, first.output
    assert f"votes: {len(_uids(source)['votes'])} copied" in first.output
    assert "s3cret-pw" not in first.output
    second = runner.invoke(app, ["merge", "--from", source, "--into", target])
    assert second.exit_code == 0 and "votes: 0 copied" in second.output

    with db_session.session_scope(source) as session:
        session.execute(update(Participant).values(ui_language="fr"))
    third = runner.invoke(app, ["merge", "--from", source, "--into", target])
    assert third.exit_code == 1
    assert "conflicting rows were left as they are" in third.output


def test_existing_rows_get_distinct_uids_when_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db_session.upgrade(url, "0001")
    with db_session.get_engine(url).begin() as connection:
        for code in ("OLD-1", "OLD-2"):
            connection.execute(
                text(
                    "INSERT INTO events (code, name, region, city, timezone, cloud_spent, currency, ui_language,"
                    " ask_profile, created_at) VALUES (:code, 'x', 'sf', 'y', 'UTC', 0, 'USD', 'en', 0, '2026-01-01')"
                ),
                {"code": code},
            )
    db_session.upgrade(url)
    with db_session.get_engine(url).connect() as connection:
        uids = list(connection.scalars(select(Event.uid)))
    assert len(set(uids)) == 2 and all(len(uid) == 36 for uid in uids)


def test_cli_upgrade_and_event_create_on_postgresql(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/deploy.md §1, as written: migrate an empty regional PostgreSQL, create the event."""
    from playground import settings as settings_module

    url = next(database := _postgres_database())
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    runner = CliRunner()
    try:
        upgraded = runner.invoke(app, ["db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        created = runner.invoke(
            app,
            "event create --code SF-2026 --name".split()
            + ["Handoff Night SF", "--region", "sf", "--city", "San Francisco"]
            + "--timezone America/Los_Angeles --budget 200".split(),
        )
        assert created.exit_code == 0, created.output
        with db_session.session_scope(url) as session:
            event = session.scalar(select(Event))
            assert (event.code, event.region, event.cloud_budget) == ("SF-2026", "sf", 200)
    finally:
        settings_module.get_settings.cache_clear()
        database.close()
