"""The improvement report renders offline, and every number in report.md is in summary.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection, Row, Select, and_, func, select
from sqlalchemy.orm import aliased
from typer.testing import CliRunner

from db.models import Answer, Conversation, Event, HandoffDecision, Turn, Vote
from db.session import session_scope
from db.visibility import vote_not_hidden
from feedback import stats
from feedback.demo_data import generate
from feedback.embeddings import embed
from feedback.export import ExportFilters
from feedback.report import build_report
from playground import settings as settings_module


def _numbers(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_numbers(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_numbers(v) for v in value)) if value else set()
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, (int, float)):
        return {str(value)}
    return set()


def _is_rounding_of_one_of(text: str, values: list[float]) -> bool:
    """``text`` is some value rounded to the digits it shows (trailing zeros of an integer may be rounding)."""
    x = float(text)
    if "." in text:
        step = 10.0 ** -len(text.split(".")[1])
    else:
        step = 10.0 ** (len(text) - len(text.rstrip("0"))) if x else 1.0
    return any(abs(v - x) <= step / 2 + 1e-9 * max(1.0, abs(v)) for v in values)


def test_report_files_agree_with_summary_json(db_url: str, tmp_path: Path) -> None:
    generate(db_url, 1500, seed=5, win_rate=0.65)
    result = build_report(db_url, tmp_path / "report", ExportFilters(), seed=1, rounds=50)
    summary = json.loads(result.summary_path.read_text())
    assert summary == json.loads(json.dumps(result.summary))
    overall = summary["overall"]
    assert overall["votes"] == 1500 and 0 < overall["decided"] < 1500
    low, high = overall["ci95"]
    assert low <= overall["handoff_on_win_rate"] <= high
    assert set(summary["by_region"]) == {"sf", "europe", "apac"}
    for region in summary["by_region"].values():
        assert {"votes", "decided", "handoff_on_win_rate", "ci95"} <= set(region)
    assert len(summary["leaderboard"]) == 4  # the local model + three live thresholds
    assert summary["handoff"]["replay"]["recommended_threshold"] is not None
    assert summary["handoff"]["auroc"]["confidence"]["auroc"] > 0.5

    markdown = result.md_path.read_text()
    shown = re.findall(r"`(-?\d+(?:\.\d+)?(?:e-?\d+)?)`", markdown)
    allowed = [float(n) for n in _numbers(summary)]
    unexplained = {n for n in shown if not _is_rounding_of_one_of(n, allowed)}
    assert shown and not unexplained, unexplained  # every shown number is a summary.json number, rounded
    rate = stats.shown_text(overall["handoff_on_win_rate"], overall["ci95"])
    assert f"`{rate}`" in markdown and f"`{overall['votes']}`" in markdown
    assert len(str(rate)) <= 5  # ~1,000 decided votes support two decimals, not 0.6312
    # The one-screen lead answers in words, with rounded numbers; every section below shows summary.json's own.
    lead, _, sections = markdown.partition("\n## ")
    assert "Handoff helps" in lead and f"{overall['handoff_on_win_rate']:.0%} of {overall['decided']} decisive" in lead
    assert f"95% CI {low:.0%} to {high:.0%}" in lead and "per 1,000 prompts" in lead
    stripped = re.sub(r"`[^`]*`", "", sections)
    assert not re.search(r"(?<![\w.>=-])0\.\d", stripped)  # no number outside the summary's code spans

    page = result.html_path.read_text()
    assert page.count("<svg") >= 3 and "<script" not in page and "cdn" not in page.lower()
    assert f"<code>{rate}</code>" in page
    assert 0 < overall["participants"] <= summary["leaderboard_participants"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "@import" not in page  # nothing remote
    assert page.index('class="lead"') < page.index("<h2>") and page.count("<details>") >= 5  # tables folded


def _vote_facts_sql(connection: Connection, conversations: Select) -> list[Row[Any]]:
    """The oracle for ``summary._vote_facts``: vote counts grouped by every dimension the report slices on,
    in ``VOTE_FACT_COLUMNS`` order, as one GROUP BY over the votes that count."""
    visible = conversations.subquery()
    off = aliased(Answer)
    dimensions = (
        Event.code,
        Event.region,
        func.coalesce(Turn.category, Conversation.category, "unknown"),
        func.coalesce(Turn.language, "unknown"),
        HandoffDecision.handed_off,
        HandoffDecision.policy,
        HandoffDecision.threshold,
        off.model,
        Conversation.handoff_side,
        Vote.winner_arm,
    )
    stmt = (
        select(*dimensions, func.count())
        .join(visible, visible.c.id == Vote.conversation_id)
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .join(Event, Event.id == Conversation.event_id)
        .join(Turn, Turn.id == Vote.turn_id)
        .outerjoin(HandoffDecision, HandoffDecision.turn_id == Turn.id)
        .outerjoin(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .where(vote_not_hidden())
        .group_by(*dimensions)
    )
    return list(connection.execute(stmt).all())


def _verdicts_per_prompt_sql(connection: Connection, conversations: Select) -> list[Row[Any]]:
    """The oracle for ``ReportVotes.inter_rater``'s cells: (prompt, winner_arm, votes) of the votes that count."""
    visible = conversations.subquery()
    stmt = (
        select(Turn.prompt, Vote.winner_arm, func.count())
        .join(Vote, Vote.turn_id == Turn.id)
        .join(visible, visible.c.id == Vote.conversation_id)
        .where(vote_not_hidden())
        .group_by(Turn.prompt, Vote.winner_arm)
    )
    return list(connection.execute(stmt))


def test_report_counts_votes_in_memory_as_its_queries_did(db_url: str) -> None:
    """The summary's vote counts and inter-rater pairs come from the votes read once (``ReportVotes``):
    the same as GROUP BY queries over the same joins (the report's queries before it counted in memory)."""
    from db.session import get_engine
    from feedback import research
    from feedback.export.dataset import conversation_query
    from feedback.report.summary import VOTE_FACT_COLUMNS, _vote_facts

    generate(db_url, 300, seed=4)
    filters = ExportFilters()
    data = research.load_report_votes(db_url, filters)
    with get_engine(db_url).connect() as connection:
        rows = _vote_facts_sql(connection, conversation_query(filters))
        per_prompt = _verdicts_per_prompt_sql(connection, conversation_query(filters))

    def key(row: tuple) -> tuple:
        return tuple((value is None, str(value)) for value in row)

    names = list(VOTE_FACT_COLUMNS)
    frame = _vote_facts(data.votes)
    got = [
        tuple(
            None if v is None or v != v else (bool(v) if k == "handed_off" else v)
            for k, v in zip(names, r, strict=True)
        )
        for r in frame[names].itertuples(index=False)
    ]
    expected = [tuple(bool(v) if k == "handed_off" else v for k, v in zip(names, r, strict=True)) for r in rows]
    assert sorted(got, key=key) == sorted(expected, key=key)
    prompts: dict[object, int] = {}
    item = np.array([prompts.setdefault(prompt, len(prompts)) for prompt, _, _ in per_prompt], dtype=np.int64)
    n = np.array([int(count) for _, _, count in per_prompt], dtype=np.int64)
    assert data.inter_rater == stats.pairwise_agreement_cells(item, n)  # the SQL's cells, the same rule


def test_small_segments_are_flagged_not_hidden(sqlite_url: str, tmp_path: Path) -> None:
    generate(sqlite_url, 150, seed=2)
    summary = build_report(sqlite_url, tmp_path, ExportFilters(region="europe"), rounds=20).summary
    assert set(summary["by_region"]) == {"europe"}
    small = [k for k, s in summary["by_language"].items() if s["small"]]
    assert small and all(summary["by_language"][k]["votes"] > 0 for k in small)
    assert "small sample" in (tmp_path / "report.md").read_text()


def test_report_on_an_empty_database_still_renders(sqlite_url: str, tmp_path: Path) -> None:
    result = build_report(sqlite_url, tmp_path, ExportFilters(), rounds=10)
    assert result.summary["overall"]["votes"] == 0 and result.summary["overall"]["ci95"] is None
    assert result.html_path.exists() and "n/a" in result.md_path.read_text()


@pytest.mark.slow  # the command loads the sentence encoder for clusters and themes
def test_report_command(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    generate(sqlite_url, 200, seed=3)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    settings_module.get_settings.cache_clear()
    from playground.cli import app

    try:
        result = CliRunner().invoke(
            app, ["report", "--out", str(tmp_path / "r"), "--event", "DEMO-SF", "--rounds", "20"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "r" / "summary.json").read_text())["filters"] == {"event": "DEMO-SF"}
    finally:
        settings_module.get_settings.cache_clear()


@pytest.mark.slow  # loads the bundled sentence encoder
def test_prompt_cluster_labels_in_the_report_are_redacted(sqlite_url: str, tmp_path: Path) -> None:
    """Cluster labels are representative prompts: an address many attendees pasted must not show in one."""
    generate(sqlite_url, 300, seed=5)
    with session_scope(sqlite_url) as session:
        decided = select(Vote.turn_id).where(Vote.winner_arm.in_(["on", "off"]))
        for turn in session.scalars(select(Turn).where(Turn.id.in_(decided), Turn.id % 2 == 0)):
            turn.prompt = "Write to zyxwv.qutsr@example.org about this"
    report = build_report(sqlite_url, tmp_path / "r", ExportFilters(), embed=embed)
    clusters = report.summary["improvement"]["prompt_clusters"]
    assert clusters
    for path in (report.md_path, report.html_path, report.summary_path):
        text = path.read_text(encoding="utf-8")
        assert "zyxwv" not in text and "qutsr" not in text, path.name
