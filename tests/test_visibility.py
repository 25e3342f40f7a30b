"""One visibility rule: hiding a conversation takes it out of every number, export, report, replay and router."""

from __future__ import annotations

import json
from pathlib import Path

from db.analytics import Scope, overview
from db.models import Vote
from db.session import session_scope
from feedback.export import ExportFilters, write_export
from feedback.moderation import hide_conversation
from feedback.replay import load_turns
from feedback.report import build_report
from playground.handoff.router import voted_examples
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds

PROMPTS = ("Why is the sky blue?", "Write a haiku about tea.", "What is 17 * 23?")


def _everything(url: str, tmp_path: Path, name: str) -> dict[str, object]:
    """What each reader of the database sees: counts, exported conversation ids, report votes, replay, router."""
    with session_scope(url) as session:
        numbers = overview(session, Scope())
    export = write_export(url, "jsonl", tmp_path / f"{name}.jsonl", ExportFilters(), salt=b"s")
    exported = [json.loads(line)["id"] for line in export.path.read_text().splitlines()]
    report = build_report(url, tmp_path / name, ExportFilters(), rounds=10)
    table = load_turns(url, ExportFilters())
    prompts, _ = voted_examples(url)
    return {
        "overview": (numbers.conversations, numbers.votes, numbers.turns),
        "export": sorted(exported),
        "report": report.summary["overall"]["votes"],
        "replay": (len(table), int((table.vote != "").sum())),
        "router": sorted(prompts),
    }


def test_hiding_a_conversation_removes_it_from_every_reader(db_url: str, tmp_path: Path) -> None:
    event = make_event(db_url, "VIS-1", "sf")
    votes = [
        add_rounds(db_url, event, [Round(arm, handed_off=True)], prompt)[0]
        for arm, prompt in zip(("on", "off", "on"), PROMPTS, strict=True)
    ]
    with session_scope(db_url) as session:
        conversations = [session.get(Vote, vote).conversation_id for vote in votes]
    before = _everything(db_url, tmp_path, "before")
    assert before == {
        "overview": (3, 3, 3),
        "export": sorted(conversations),
        "report": 3,
        "replay": (3, 3),
        "router": sorted(PROMPTS),
    }
    with session_scope(db_url) as session:
        hide_conversation(session, conversations[0], by="admin")
    after = _everything(db_url, tmp_path, "after")
    assert after == {
        "overview": (2, 2, 2),
        "export": sorted(conversations[1:]),
        "report": 2,
        "replay": (2, 2),
        "router": sorted(PROMPTS[1:]),
    }
