"""`handoff demo-data`: seeded, realistic, exactly N votes, true win rate as asked."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import Answer, Event, HandoffDecision, Participant, Rating, Vote
from db.session import session_scope
from feedback.capture import join_event, start_conversation
from feedback.demo_data import generate
from playground import settings as settings_module


def _winners(url: str) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(select(Vote.winner_arm).order_by(Vote.id)))


def test_writes_exactly_n_votes_across_three_regions_with_everything_attached(db_url: str) -> None:
    assert generate(db_url, 500, seed=4) == 500
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Vote)) == 500
        regions = set(session.scalars(select(Event.region).join(Participant, Participant.event_id == Event.id)))
        assert regions == {"sf", "europe", "apac"}
        arms = Counter(session.scalars(select(Answer.arm)))
        assert arms["off"] == arms["on"] == 500 and arms["shadow"] > 0
        decision = session.scalar(select(HandoffDecision).limit(1))
        assert {"confidence", "router"} <= set(decision.signals["scores"])
        assert session.scalar(select(func.count()).select_from(Rating)) > 0
        # ids were assigned in bulk: the app can still insert rows afterwards (PostgreSQL sequences moved)
        event = session.scalar(select(Event).limit(1))
        conversation = start_conversation(session, join_event(session, event))
        assert conversation.id > 0


def test_same_seed_same_data_and_more_votes_append(sqlite_url: str, tmp_path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    from db.session import upgrade

    upgrade(other)
    generate(sqlite_url, 200, seed=9)
    generate(other, 200, seed=9)
    assert _winners(sqlite_url) == _winners(other)
    generate(sqlite_url, 50, seed=10)
    assert len(_winners(sqlite_url)) == 250


@pytest.mark.parametrize("truth", [0.3, 0.75])
def test_decided_votes_follow_the_requested_win_rate(sqlite_url: str, truth: float) -> None:
    generate(sqlite_url, 6000, seed=1, win_rate=truth)
    counts = Counter(_winners(sqlite_url))
    observed = counts["on"] / (counts["on"] + counts["off"])
    assert abs(observed - truth) < 0.04  # ~2,400 decided votes: SE ≈ 0.01


def test_demo_data_command(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    from playground.cli import app

    try:
        result = CliRunner().invoke(app, ["demo-data", "--votes", "30", "--seed", "2", "--win-rate", "0.7"])
        assert result.exit_code == 0 and "Wrote 30 demo votes" in result.output
        assert len(_winners(sqlite_url)) == 30
        assert CliRunner().invoke(app, ["demo-data", "--votes", "3", "--win-rate", "1.5"]).exit_code != 0
    finally:
        settings_module.get_settings.cache_clear()


def test_demo_data_plants_documented_effects(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from db.models import JudgeVerdict

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    from playground.cli import app

    try:
        result = CliRunner().invoke(
            app,
            ["demo-data", "--votes", "200", "--plant-bots", "0.3", "--plant-judge-agreement", "0.9"]
            + ["--plant-fair-share", "0.5", "--plant-origin-leak", "1"],
        )
        assert result.exit_code == 0 and "planted: bots=0.3" in result.output, result.output
    finally:
        settings_module.get_settings.cache_clear()
    with session_scope(sqlite_url) as session:
        bots = [p for p in session.scalars(select(Participant)) if (p.profile or {}).get("planted") == "bot"]
        assert bots and session.scalar(select(func.count()).select_from(JudgeVerdict)) > 0
        displays = Counter(session.scalars(select(Vote.display)))
        assert displays["fair"] > 40 and displays["live"] > 40
        cloud = list(session.scalars(select(Answer).where(Answer.source == "cloud")))
        assert cloud and all(a.reveals_origin and a.style["tokens"] == a.tokens_out for a in cloud)
        bot_votes = list(session.scalars(select(Vote).where(Vote.participant_id.in_([b.id for b in bots]))))
        assert all(v.winner == "a" and v.time_to_vote_ms < 1500 for v in bot_votes)
