"""The report's research controls on demo data with planted effects of known size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy import text as sql

from db.models import Participant
from db.session import get_engine, session_scope
from feedback import research, vote_flags
from feedback.demo_data import PLANTED_JUDGE, Plant, generate
from feedback.export import ExportFilters

ROUNDS = 100


def _votes(url: str):
    return research.load_votes(url, ExportFilters())


def test_style_control_removes_a_planted_length_preference(sqlite_url: str) -> None:
    generate(sqlite_url, 3000, seed=21, win_rate=0.5, plant=Plant(length_preference=4.0))
    votes, _ = _votes(sqlite_url)
    result = research.style_control(votes, rounds=ROUNDS, seed=0)
    raw, controlled = result["raw"], result["controlled"]
    assert raw["ci95"][0] > 0.55  # without control the longer cloud answer looks better
    low, high = controlled["ci95"]
    assert low <= 0.5 <= high  # the planted real advantage: none
    assert controlled["coefficient_ci95"]["tokens"][0] > 0
    assert result["mean_style"]["on"]["tokens"] > result["mean_style"]["off"]["tokens"]
    assert result["explained_share"] > 0.6


def test_planted_bots_are_flagged_with_precision_and_recall_of_at_least_0_9(sqlite_url: str) -> None:
    generate(sqlite_url, 3000, seed=22, plant=Plant(bots=0.1))
    votes, _ = _votes(sqlite_url)
    flags = vote_flags.quality_flags(votes)
    flagged = set(votes.loc[flags["flagged_participant"], "participant_id"])
    with session_scope(sqlite_url) as session:
        bots = {p.id for p in session.scalars(select(Participant)) if (p.profile or {}).get("planted") == "bot"}
    assert len(bots) >= 20
    true_positives = len(flagged & bots)
    assert true_positives / len(flagged) >= 0.9 and true_positives / len(bots) >= 0.9
    quality = research.vote_quality(votes, flags, rounds=ROUNDS, seed=0)
    assert quality["filters"]["flagged_participant"]["removed"] == int(flags["flagged_participant"].sum())
    assert quality["filters"]["all"]["votes"] + quality["filters"]["all"]["removed"] == len(votes)


def test_a_planted_latency_leak_is_detected_and_its_absence_is_not(sqlite_url: str, tmp_path) -> None:
    from db.session import upgrade

    generate(sqlite_url, 2000, seed=23, plant=Plant(latency_leak_ms=1500.0, fair_share=0.3))
    leak = research.latency(_votes(sqlite_url)[0], rounds=ROUNDS, seed=0)
    assert leak["leak_detected"] and leak["signals"]["duration"]["auroc"] > 0.7
    assert set(leak["by_display"]) == {"live", "fair"}
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    upgrade(clean_url)
    generate(clean_url, 2000, seed=23, plant=Plant(latency_leak_ms=0.0))
    clean = research.latency(_votes(clean_url)[0], rounds=ROUNDS, seed=0)
    low, high = clean["signals"]["duration"]["ci95"]
    assert low <= 0.5 <= high and not clean["leak_detected"]


def test_agreement_of_a_planted_judge_equals_its_known_value(sqlite_url: str) -> None:
    generate(sqlite_url, 3000, seed=24, plant=Plant(judge_agreement=0.8))
    votes, judges = _votes(sqlite_url)
    result = research.judge_agreement(votes, judges, rounds=ROUNDS, seed=0)[PLANTED_JUDGE]
    low, high = result["agreement_ci95"]
    assert low <= 0.8 <= high
    assert result["position_consistent"] == 1.0 and result["cost"] > 0 and result["tokens_in"] > 0
    assert result["disagreements"] and all(d["human"] != d["judge"] for d in result["disagreements"])


def test_repeated_prompts_are_flagged_once_seen_exactly_or_nearly(sqlite_url: str) -> None:
    generate(sqlite_url, 600, seed=25, plant=Plant(duplicates=0.5))
    votes, _ = _votes(sqlite_url)
    exact = vote_flags.duplicate_votes(votes, None)
    assert exact.any()
    first_prompts = (
        votes.loc[~exact].groupby("participant_id")["prompt"].apply(lambda p: p.str.lower().duplicated().any())
    )
    assert not first_prompts.any()
    near = vote_flags.duplicate_votes(votes, lambda texts: _bag_of_words(texts))
    assert near.sum() >= exact.sum()


def _bag_of_words(texts) -> np.ndarray:
    """A stand-in sentence embedding for the test of the near-duplicate rule (the real one is MiniLM)."""
    vocab = sorted({w for t in texts for w in t.split()})
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(texts), len(vocab)))
    for row, text in enumerate(texts):
        for word in text.split():
            out[row, index[word]] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_the_reports_compact_votes_give_every_research_number_of_the_per_vote_frame(sqlite_url: str) -> None:
    """``load_report_votes`` keeps a few bytes a vote and the sections' own rows; the research numbers
    and the quality flags are those of the whole per-vote frame, to the bit (bots, duplicates, a judge,
    a latency leak and a length preference planted so that every section has something to find)."""
    generate(
        sqlite_url,
        2500,
        seed=26,
        plant=Plant(bots=0.1, duplicates=0.3, judge_agreement=0.8, latency_leak_ms=800.0, length_preference=2.0),
    )
    votes, judges = _votes(sqlite_url)
    whole, flags = research.research(votes, judges, rounds=ROUNDS, seed=0, embed=_bag_of_words)
    data = research.load_report_votes(sqlite_url, ExportFilters(), _bag_of_words, chunk=700)
    assert research.report_research(data, rounds=ROUNDS, seed=0) == whole
    for name in research.FILTERS:
        assert (data.flags[name].to_numpy(bool) == flags[name].to_numpy(bool)).all(), name
    assert flags[list(research.FILTERS)].to_numpy().any(axis=0).all()  # every flag planted and found
    assert len(data.votes) == len(votes) and "prompt" not in data.votes and "on_style.tokens" not in data.votes


def test_the_reports_flags_come_out_the_same_in_chunks_of_whole_participants(sqlite_url: str, monkeypatch) -> None:
    generate(sqlite_url, 800, seed=27, plant=Plant(bots=0.2, duplicates=0.4))
    whole = research.load_report_votes(sqlite_url, ExportFilters()).flags
    monkeypatch.setattr(research, "FLAG_CHUNK", 37)  # many chunks, each cut at a participant's last vote
    chunked = research.load_report_votes(sqlite_url, ExportFilters(), chunk=100).flags
    assert whole.equals(chunked) and whole.to_numpy().any()


def test_the_reports_votes_read_as_arrow_columns_equal_those_read_row_by_row(sqlite_url: str, monkeypatch) -> None:
    """On a SQLite file ``vote_column_arrays`` reads through ADBC (NULLs as flags beside each column): the
    compact votes, flags and sections' rows are those of the SQLAlchemy rows, to the bit."""
    import db.research

    generate(sqlite_url, 1500, seed=28, plant=Plant(bots=0.1, duplicates=0.3, judge_agreement=0.8))
    with get_engine(sqlite_url).begin() as connection:  # NULLs in text, number and JSON columns, first rows too
        connection.execute(sql("UPDATE votes SET display = NULL, time_to_vote_ms = NULL WHERE id % 7 < 2"))
        connection.execute(sql("UPDATE answers SET ttft_ms = NULL, tokens_out = NULL, style = NULL WHERE id % 5 < 2"))
        # styles Arrow's JSON reader takes (a feature missing or null, another key) and some it leaves to the loop
        connection.execute(
            sql("""UPDATE answers SET style = '{"tokens": 7, "bold": null, "x": [1]}' WHERE id % 5 = 2""")
        )
        connection.execute(sql("UPDATE answers SET style = 'null' WHERE id % 97 = 3"))
    arrow = research.load_report_votes(sqlite_url, ExportFilters(), chunk=400)
    assert len(arrow.judged) > 0 and arrow.timing["on_ttft_ms"].isna().any()
    monkeypatch.setattr(db.research, "sqlite_arrow", lambda engine: None)
    rows = research.load_report_votes(sqlite_url, ExportFilters(), chunk=400)
    for name in ("votes", "flags", "style", "timing", "judged", "judges"):
        pd.testing.assert_frame_equal(getattr(arrow, name), getattr(rows, name), check_exact=True)
