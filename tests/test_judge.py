"""`handoff judge`: both orders, stored apart from human votes, tokens and cost recorded."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import JudgeVerdict, Vote
from db.session import session_scope
from feedback.demo_data import generate
from feedback.judge import messages, verdict_arm
from playground.settings import Settings


def test_a_verdict_is_read_in_the_order_it_was_asked() -> None:
    assert verdict_arm("Both fine, but [[A]]", "on_first") == "on"
    assert verdict_arm("[[A]]", "off_first") == "off"
    assert verdict_arm("first [[B]] then [[C]]", "on_first") == "tie"
    assert verdict_arm("no verdict here", "on_first") is None
    chat = messages("Q?", "first answer", "second answer")
    assert chat[1]["content"].index("first answer") < chat[1]["content"].index("second answer")


@pytest.mark.slow  # asks the real stand-in server
def test_judge_command_asks_both_orders_and_keeps_verdicts_apart(app_env: Settings) -> None:
    from playground.cli import app

    url = app_env.resolved_database_url
    generate(url, 150, seed=41)
    with session_scope(url) as session:
        votes_before = session.scalar(select(func.count()).select_from(Vote))
    result = CliRunner().invoke(app, ["judge", "--event", "DEMO-SF", "--limit", "2", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "Judged 2 pairs (4 verdicts" in result.output
    with session_scope(url) as session:
        verdicts = list(session.scalars(select(JudgeVerdict)))
        assert session.scalar(select(func.count()).select_from(Vote)) == votes_before
    assert Counter(v.order for v in verdicts) == {"on_first": 2, "off_first": 2}
    assert len({v.vote_id for v in verdicts}) == 2
    assert all(v.tokens_in and v.tokens_out and v.cost > 0 and v.latency_ms > 0 for v in verdicts)
    assert all(v.base_url_host and "key" not in v.base_url_host for v in verdicts)
    again = CliRunner().invoke(app, ["judge", "--event", "DEMO-SF", "--limit", "2", "--max-tokens", "8"])
    assert again.exit_code == 0, again.output
    found = re.search(r"Judged (\d+) pairs", again.output)
    judged_again = int(found.group(1)) if found else 0
    assert found or "Nothing to judge" in again.output
    with session_scope(url) as session:
        pairs = Counter(session.scalars(select(JudgeVerdict.vote_id)))
    assert len(pairs) == 2 + judged_again and set(pairs.values()) == {2}  # new pairs only, each in both orders
