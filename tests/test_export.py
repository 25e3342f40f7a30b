"""Exports round-trip against the database; hidden data, PII and CSV formulas never leak."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update

from db.models import Conversation, Event, Vote, utcnow
from db.session import session_scope
from feedback import stats
from feedback.capture import join_event, record_turn, start_conversation
from feedback.demo_data import generate
from feedback.export import FORMATS, ExportFilters, UnknownFormat, write_export
from feedback.votes import PaneRating, VoteSubmission, submit_vote
from tests.factories import make_event, turn_record

PII_PROMPT = (
    "Email me at alice.smith@example.org or call +1 (415) 555-0199, server 192.168.10.42, "
    "card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234567890, repo https://bob:hunter2@git.example.com/x.git"
)
PII_VALUES = (
    "alice.smith@example.org",
    "555-0199",
    "192.168.10.42",
    "4111 1111 1111 1111",
    "sk-proj-abcdef",
    "hunter2",
)
INJECTION = '=HYPERLINK("http://evil.example/","click")'


@pytest.fixture
def seeded(db_url: str) -> dict[str, int]:
    """Demo data plus hand-made rows: PII and a formula in text, a hidden conversation, a hidden vote."""
    generate(db_url, 120, seed=3)
    ids: dict[str, int] = {}
    event_id = make_event(db_url, "HAND-1", "europe", name="Hand made", licence="CC-BY-4.0")
    with session_scope(db_url) as session:
        participant = join_event(session, session.get(Event, event_id))
        for name, prompt in (
            ("pii", PII_PROMPT),
            ("hidden_conversation", "secret hidden prompt"),
            ("hidden_vote", "prompt with hidden vote"),
        ):
            conversation = start_conversation(session, participant)
            record_turn(
                session,
                conversation.id,
                turn_record(prompt, category="coding", latency_off=900.0, latency_on=1500.0, cost=Decimal("0.0004")),
            )
            ids[name] = conversation.id
    for name, comment in (
        ("pii", INJECTION + " mail alice.smith@example.org"),
        ("hidden_conversation", "x"),
        ("hidden_vote", "hidden vote comment"),
    ):
        with session_scope(db_url) as session:
            ids[f"vote_{name}"] = submit_vote(
                session, VoteSubmission(f"k-{name}", ids[name], "a", comment, {"a": PaneRating(2, ["wrong"])})
            )
    with session_scope(db_url) as session:
        session.execute(
            update(Conversation).where(Conversation.id == ids["hidden_conversation"]).values(hidden_at=utcnow())
        )
        session.execute(update(Vote).where(Vote.id == ids["vote_hidden_vote"]).values(hidden_at=utcnow()))
    return ids


def _visible_votes(db_url: str) -> pd.DataFrame:
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Vote.id, Vote.winner_arm)
            .join(Conversation, Conversation.id == Vote.conversation_id)
            .where(Vote.hidden_at.is_(None), Conversation.hidden_at.is_(None))
        ).all()
    return pd.DataFrame(rows, columns=["vote_id", "winner_arm"]).sort_values("vote_id").reset_index(drop=True)


def test_parquet_and_csv_round_trip_to_the_database_votes(db_url: str, seeded: dict, tmp_path: Path) -> None:
    expected = _visible_votes(db_url)
    parquet = write_export(db_url, "parquet", tmp_path / "votes.parquet", ExportFilters())
    frame = pd.read_parquet(parquet.path).sort_values("vote_id").reset_index(drop=True)
    assert parquet.rows == len(expected) == len(frame)
    pd.testing.assert_frame_equal(frame[["vote_id", "winner_arm"]], expected, check_dtype=False)
    schema = pq.read_schema(parquet.path)
    assert str(schema.field("score").type) == "double" and str(schema.field("created_at").type).startswith("timestamp")
    assert str(schema.field("handed_off").type) == "bool" and str(schema.field("stars_on").type) == "int32"
    table = write_export(db_url, "csv", tmp_path / "votes.csv", ExportFilters())
    frame_csv = pd.read_csv(table.path).sort_values("vote_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame_csv[["vote_id", "winner_arm"]], expected, check_dtype=False)


def test_hidden_conversations_and_votes_never_appear(db_url: str, seeded: dict, tmp_path: Path) -> None:
    for fmt in FORMATS:
        text = write_export(db_url, fmt, tmp_path / f"all.{fmt}", ExportFilters()).path.read_bytes()
        if fmt != "parquet":
            assert b"secret hidden prompt" not in text and b"hidden vote comment" not in text
    frame = pd.read_parquet(tmp_path / "all.parquet")
    assert seeded["vote_hidden_vote"] not in set(frame.vote_id)
    assert seeded["hidden_conversation"] not in set(frame.conversation_id)


def test_pii_is_redacted_by_default_and_kept_only_when_asked(db_url: str, seeded: dict, tmp_path: Path) -> None:
    for fmt in ("jsonl", "csv", "arena", "dpo"):
        result = write_export(db_url, fmt, tmp_path / f"r.{fmt}", ExportFilters(event="HAND-1"))
        text = result.path.read_text(encoding="utf-8")
        for value in PII_VALUES:
            assert value not in text, (fmt, value)
        assert "PII redaction was ON" in result.card_path.read_text()
    frame = pd.read_parquet(write_export(db_url, "parquet", tmp_path / "r.parquet", ExportFilters(event="HAND-1")).path)
    assert "[EMAIL]" in frame.prompt.iloc[0] and "[CREDIT_CARD]" in frame.prompt.iloc[0]
    raw = write_export(db_url, "jsonl", tmp_path / "raw.jsonl", ExportFilters(event="HAND-1"), redact=False)
    assert all(value in raw.path.read_text(encoding="utf-8") for value in PII_VALUES)
    assert "PII redaction was OFF" in raw.card_path.read_text()


def test_csv_injection_strings_come_out_inert(db_url: str, seeded: dict, tmp_path: Path) -> None:
    result = write_export(db_url, "csv", tmp_path / "x.csv", ExportFilters(event="HAND-1"))
    with result.path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values())
    assert rows[0]["comment"].startswith("'=HYPERLINK")


def test_jsonl_nests_turns_answers_and_votes_per_conversation(db_url: str, seeded: dict, tmp_path: Path) -> None:
    result = write_export(db_url, "jsonl", tmp_path / "c.jsonl", ExportFilters())
    conversations = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
    assert result.rows == len(conversations) == result.tally.conversations
    assert sum(len(t["votes"]) for c in conversations for t in c["turns"]) == len(_visible_votes(db_url))
    first = next(c for c in conversations if c["id"] == seeded["pii"])
    assert first["turns"][0]["answers"]["on"]["source"] == "cloud" and first["turns"][0]["decision"]["handed_off"]


def test_arena_battles_leave_out_identical_votes_and_feed_bradley_terry(
    db_url: str, seeded: dict, tmp_path: Path
) -> None:
    result = write_export(db_url, "arena", tmp_path / "battles.jsonl", ExportFilters())
    battles = pd.read_json(result.path, lines=True)
    votes = _visible_votes(db_url)
    identical = int((votes.winner_arm == "identical").sum())
    assert len(battles) == len(votes) - identical
    assert set(battles.winner) <= {"model_a", "model_b", "tie", "tie (bothbad)"}
    assert {"question_id", "judge", "conversation_a", "conversation_b", "turn", "anony", "language", "tstamp"} <= set(
        battles
    )
    assert f"| identical votes (no winner) | {identical:,} |" in result.card_path.read_text()
    ratings = stats.compute_bt(battles)  # FastChat-shaped input works as is
    assert len(ratings) >= 2


def test_dpo_pairs_are_conversational_preferences(db_url: str, seeded: dict, tmp_path: Path) -> None:
    result = write_export(db_url, "dpo", tmp_path / "pairs.jsonl", ExportFilters())
    pairs = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
    assert pairs and result.rows == len(pairs)
    for pair in pairs:
        assert set(pair) == {"prompt", "chosen", "rejected"}
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
    mine = [p for p in pairs if "[EMAIL]" in p["prompt"][-1]["content"]]
    with session_scope(db_url) as session:
        won = session.get(Vote, seeded["vote_pii"]).winner_arm  # pane a won; a holds a random arm
    assert mine[0]["chosen"][0]["content"] == {"on": "cloud answer", "off": "local answer"}[won]
    decided = int(_visible_votes(db_url).winner_arm.isin(["on", "off"]).sum())
    assert len(pairs) <= decided + result.tally.skipped["ties ordered by stars read"]


def test_participant_ids_are_salted_per_export(db_url: str, seeded: dict, tmp_path: Path) -> None:
    def judges(name: str, salt: bytes | None) -> set[str]:
        path = write_export(db_url, "csv", tmp_path / name, ExportFilters(region="europe"), salt=salt).path
        return set(pd.read_csv(path).participant)

    assert judges("a.csv", None).isdisjoint(judges("b.csv", None))
    assert judges("c.csv", b"organizer-salt") == judges("d.csv", b"organizer-salt")


def test_data_card_states_filters_counts_consent_and_licence(db_url: str, seeded: dict, tmp_path: Path) -> None:
    result = write_export(db_url, "parquet", tmp_path / "p.parquet", ExportFilters(event="hand-1"))
    card = result.card_path.read_text()
    assert result.card_path.name == "p.parquet.card.md"
    assert "event = hand-1" in card and f"| rows (votes) | {result.rows:,} |" in card
    assert "CC-BY-4.0" in card and "## Consent" in card and "schema version" in card


def test_unknown_format_is_a_clear_error(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownFormat, match="choose one of"):
        write_export(db_url, "xlsx", tmp_path / "x.xlsx", ExportFilters())


def test_decision_signals_are_redacted_too(db_url: str, tmp_path: Path) -> None:
    """A self-handoff reason or a router's notes can quote the prompt: its PII must not leave either."""
    event_id = make_event(db_url, "SIG-1", "sf")
    with session_scope(db_url) as session:
        conversation = start_conversation(session, join_event(session, session.get(Event, event_id)))
        signals = {"reason": "asked by josé@correo.es", "notes": ["OPENAI_API_KEY=abcd1234efgh"]}
        record_turn(session, conversation.id, turn_record("hello", signals=signals))
        conversation_id = conversation.id
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k-sig", conversation_id, "a", None, {"a": PaneRating(4, [])}))
    text = write_export(db_url, "jsonl", tmp_path / "s.jsonl", ExportFilters(event="SIG-1")).path.read_text("utf-8")
    assert "[EMAIL]" in text and "[API_KEY]" in text
    assert "josé" not in text and "abcd1234efgh" not in text


def test_exports_carry_vote_quality_flags_and_keep_every_row(sqlite_url: str, tmp_path: Path) -> None:
    from feedback.demo_data import Plant

    generate(sqlite_url, 400, seed=44, plant=Plant(bots=0.2, origin_leak=0.3))
    result = write_export(sqlite_url, "csv", tmp_path / "flags.csv", ExportFilters())
    frame = pd.read_csv(result.path)
    assert len(frame) == 400  # flagged votes are carried, not dropped
    assert frame["flagged_participant"].any() and not frame["flagged_participant"].all()
    assert frame["reveals_origin"].any() and frame["too_fast"].any()
    bots = frame[frame["participant_flags"].fillna("").str.contains("too_fast")]
    assert (bots["time_to_vote_ms"] < 2000).mean() > 0.9
    assert set(frame["display"]) == {"live"}
    lines = write_export(sqlite_url, "jsonl", tmp_path / "flags.jsonl", ExportFilters()).path.read_text().splitlines()
    vote = json.loads(lines[0])["turns"][0]["votes"][0]
    assert {"too_fast", "flagged_participant", "reveals_origin", "duplicate"} <= set(vote["flags"])


HOSTILE_TEXTS = (
    "",
    "plain",
    'say "hi"',
    '"',
    "a,b",
    "line\nbreak",
    "carriage\rreturn",
    "crlf\r\n",
    "=SUM(A1:A2)",
    "+1",
    "-2",
    "@cmd",
    "\tTAB",
    "\rCR first",
    "'already",
    " lead and trail ",
    "ünïcödé, 用户 \u2028 \x85 \x0b \x1c",
    "emoji 🎉",
    "\x00nul",
    '=HYPERLINK("http://evil.example/","click")',
    "'",
    "\\",
)


def _csv_writer_bytes(records: list[tuple]) -> bytes:
    """What the row-by-row writer wrote: the OWASP prefix, then CPython's csv.writer (QUOTE_MINIMAL)."""
    import io

    def inert(value: object) -> object:  # OWASP CSV injection: formula-looking text gets a leading '
        if isinstance(value, str):
            return ("'" + value) if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value
        return value.isoformat() if hasattr(value, "isoformat") else value

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerows([inert(value) for value in record] for record in records)
    return text.getvalue().encode("utf-8")


def _typed(records: list[tuple]) -> object:
    """The records as the flat table the exports encode (``flat.SCHEMA``)."""
    import pyarrow as pa

    from feedback.export.flat import SCHEMA

    columns = list(zip(*records, strict=True))
    return pa.Table.from_arrays(
        [pa.array(column, field.type) for column, field in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


def test_csv_encoder_writes_what_csv_writer_writes_on_hostile_values() -> None:
    """The column-wise CSV encoder is byte for byte csv.writer on the Python values of the typed table: quoting,
    inert prefixes, float repr, bools, None, timestamps with and without microseconds, before year 1000, null."""
    import datetime as dt
    import random

    from feedback.export.csv import encode_table
    from feedback.export.flat import COLUMNS

    kinds = [kind for _, kind in COLUMNS.values()]
    rng = random.Random(7)
    floats = [0.0, -0.0, 1.0, 0.1, 1e15, 1e16, 1.5e-5, 1e-4, 123456789.123, -2.5, float("inf"), float("nan"), 1e300]
    floats += [rng.uniform(-1e4, 1e4) for _ in range(50)] + [
        rng.random() * 10 ** rng.randint(-8, 20) for _ in range(50)
    ]
    stamps = [
        None,
        dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 16, 0, 1, 5, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ]

    def value(kind: str) -> object:
        if rng.random() < 0.15:
            return None
        return {
            "string": lambda: rng.choice(HOSTILE_TEXTS) + rng.choice(("", "x", ",", '"')),
            "bool": lambda: rng.random() < 0.5,
            "int64": lambda: rng.randint(-(2**40), 2**40),
            "int32": lambda: rng.randint(1, 5),
            "float64": lambda: rng.choice(floats),
            "timestamp": lambda: rng.choice(stamps[2:]),
        }[kind]()

    records = [tuple(value(kind) for kind in kinds) for _ in range(400)]
    assert encode_table(_typed(records)) == _csv_writer_bytes(records)
    # every hostile text in every text column, alone
    for text in HOSTILE_TEXTS:
        records = [tuple(text if kind == "string" else value(kind) for kind in kinds)]
        assert encode_table(_typed(records)) == _csv_writer_bytes(records), repr(text)
    # odd times: null, before year 1000 (strftime would not pad it)
    for stamp in stamps[:2]:
        records = [tuple(stamp if kind == "timestamp" else value(kind) for kind in kinds) for _ in range(3)]
        assert encode_table(_typed(records)) == _csv_writer_bytes(records), stamp


def test_csv_export_is_csv_writer_byte_for_byte_on_hostile_database_text(sqlite_url: str, tmp_path: Path) -> None:
    """End to end: hostile prompts and comments in the database come out as csv.writer wrote them."""
    from feedback.export.csv import header

    event_id = make_event(sqlite_url, "HOST-1", "sf")
    with session_scope(sqlite_url) as session:
        participant = join_event(session, session.get(Event, event_id))
        conversations = []
        for i, text in enumerate(HOSTILE_TEXTS):
            conversation = start_conversation(session, participant)
            record_turn(session, conversation.id, turn_record(text or "empty", category="coding"))
            comment = text.replace("\x00", "") if i % 2 else f"{text} {i}".replace("\x00", "")  # NUL is refused
            conversations.append((conversation.id, comment))
    for i, (conversation_id, comment) in enumerate(conversations):
        with session_scope(sqlite_url) as session:
            submit_vote(session, VoteSubmission(f"k-host-{i}", conversation_id, "a", comment, {"a": PaneRating(3, [])}))
    filters = ExportFilters(event="HOST-1")
    result = write_export(sqlite_url, "csv", tmp_path / "hostile.csv", filters, salt=b"s")
    # the same rows, typed, from the Parquet export: what the row-by-row writer handed csv.writer
    table = pq.read_table(write_export(sqlite_url, "parquet", tmp_path / "h.parquet", filters, salt=b"s").path)
    rows = [tuple(row.values()) for row in table.to_pylist()]
    assert len(rows) == result.rows == len(HOSTILE_TEXTS)
    assert result.path.read_bytes() == header() + _csv_writer_bytes(rows)


def test_sqlite_columns_read_as_sqlalchemy_reads_them(sqlite_url: str, tmp_path: Path) -> None:
    """On a SQLite file the batch queries run on ADBC's SQLite driver straight into Arrow columns (without it,
    through SQLAlchemy's rows); either way every value, and its Python type, equals what SQLAlchemy's own
    result processing returns (times as UTC, NUMERIC as float)."""
    from db.arrow import sqlite_arrow
    from db.session import get_engine
    from feedback.export.dataset import _as_utc, _py, _Query, _statements, conversation_query

    generate(sqlite_url, 150, seed=5)
    engine = get_engine(sqlite_url)
    arrow = sqlite_arrow(engine)
    assert arrow is not None
    theirs = {
        "conversations": {7: _as_utc},
        "turns": {6: _as_utc},
        "answers": {7: lambda v: None if v is None else float(v)},
        "votes": {6: _as_utc},
    }
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(conversation_query(ExportFilters()).order_by(Conversation.id))]
        for reader in (arrow, None):
            queries = {name: _Query(name, stmt, engine.dialect, reader) for name, stmt in _statements(True).items()}
            assert all(query.sql for query in queries.values())
            vote_ids = queries["votes"].columns(connection, ids)["id"].to_pylist()
            for name, query in queries.items():
                wanted = vote_ids if name == "ratings" else ids
                ours = list(zip(*(_py(column) for column in query.columns(connection, wanted).values()), strict=True))
                read = [
                    tuple(theirs.get(name, {}).get(i, lambda v: v)(v) for i, v in enumerate(row))
                    for row in connection.execute(query.stmt, {"ids": wanted}).all()
                ]
                assert ours and ours == read, name
                assert [tuple(map(type, row)) for row in ours] == [tuple(map(type, row)) for row in read], name
    arrow.close()


def _nested_flattened(batch: object) -> list[tuple]:
    """The flat rows as the nested rows give them (the row-by-row definition ``flat.vote_table`` replaced)."""
    import datetime as dt

    from db.vocabulary import BOTH
    from feedback.export.dataset import conversation_rows

    rows = []
    for conversation in conversation_rows(batch):
        for turn in conversation.turns:
            off, on, decision = turn.answers.get("off"), turn.answers.get("on"), turn.decision
            for vote in turn.votes:
                r_off, r_on, r_both = (vote.ratings.get(arm) for arm in ("off", "on", BOTH))
                f = vote.flags
                rows.append(
                    (
                        *(vote.id, conversation.id, turn.index, conversation.event, conversation.region),
                        *(conversation.participant, turn.language, turn.category or conversation.category),
                        *(conversation.handoff_side, vote.winner, vote.winner_arm, vote.final),
                        *(
                            (decision.policy, decision.threshold, decision.score, decision.handed_off)
                            if decision
                            else [None] * 4
                        ),
                        turn.prompt,
                        *(off.text if off else None, on.text if on else None, off.model if off else None),
                        *(on.model if on else None, on.source if on else None, off.latency_ms if off else None),
                        *(on.latency_ms if on else None, on.cost if on else None, off.energy_wh if off else None),
                        on.energy_wh if on else None,
                        *(rating.stars if rating else None for rating in (r_off, r_on, r_both)),
                        *(";".join(rating.tags) if rating else None for rating in (r_off, r_on, r_both)),
                        *(vote.comment, vote.created_at.astimezone(dt.UTC), vote.time_to_vote_ms, vote.display),
                        *(
                            (f.too_fast, f.flagged_participant, f.participant_flags, f.reveals_origin, f.duplicate)
                            if f is not None
                            else [None] * 5
                        ),
                    )
                )
    return rows


def test_flat_table_is_the_nested_rows_flattened(db_url: str, seeded: dict) -> None:
    """``flat.vote_table`` joins the batch's columns in Arrow: row for row, value for value (types included) it
    is what flattening the nested rows gives, on each database's own driver values (SQLite text times and 0/1
    booleans, PostgreSQL datetimes and Decimals), with votes without ratings, decisions or flags in it."""
    import numpy as np

    from feedback.export.dataset import FlagColumns, Tally, iter_batches
    from feedback.export.flat import SCHEMA, vote_table
    from feedback.vote_flags import flag_lookup

    with session_scope(db_url) as session:  # a vote without flags (not in the lookup) and a turn without votes
        extra = session.execute(select(Vote.id).order_by(Vote.id.desc()).limit(1)).scalar_one()
    flags = flag_lookup(db_url, ExportFilters())
    seen = 0

    def without_extra(ids: object) -> object:
        found = flags(ids)
        return FlagColumns(found.found & (np.asarray(ids) != extra), found.bits, found.reasons)

    for flag_of in (flags, without_extra, None):
        tables = []
        for batch in iter_batches(
            db_url, ExportFilters(), salt=b"s", redact_pii=True, tally=Tally(), batch=7, signals=False, flag_of=flag_of
        ):
            table = vote_table(batch)
            assert table.schema == SCHEMA
            rows = [tuple(row.values()) for row in table.to_pylist()]
            expected = _nested_flattened(batch)
            assert rows == expected
            assert [tuple(map(type, row)) for row in rows] == [tuple(map(type, row)) for row in expected]
            tables.append(table)
        seen = sum(t.num_rows for t in tables)
    assert seen == len(_visible_votes(db_url))


def test_json_text_is_what_orjson_writes_on_hostile_values() -> None:
    """``jsontext``'s column encoders write exactly orjson's text of the Python values: escapes, unicode,
    floats in every range (shortest round trip, ``.0``, exponents, nan and inf as null), ints, bools, null,
    times as ``str(datetime)``."""
    import datetime as dt
    import random

    import orjson
    import pyarrow as pa

    from feedback.export import jsontext as js

    rng = random.Random(11)
    texts = [*HOSTILE_TEXTS, *(chr(i) for i in range(0x20)), "\x7f", "\u2028\u2029", "tab\tnew\nline\r", None]
    texts += ["".join(rng.choice(HOSTILE_TEXTS + ("\x01", "\x1f", "\b", "\f")) for _ in range(4)) for _ in range(300)]
    assert js.strings(pa.array(texts, pa.string())).to_pylist() == [orjson.dumps(t).decode() for t in texts]
    floats = [0.0, -0.0, 1.0, -1.0, 0.1, 1e-4, 9.99e-5, 1e-5, 1.5e-6, 1e9, 1e15, 1e16, 1e17, 1e21, 1e300, 5e-324]
    floats += [float("inf"), float("-inf"), float("nan"), 123456789.123, 1772427530.419696, None]
    floats += [rng.random() * 10 ** rng.randint(-12, 24) * rng.choice((1, -1)) for _ in range(3000)]
    floats += [float(rng.randint(-(10**12), 10**12)) for _ in range(500)]
    assert js.floats(pa.array(floats, pa.float64())).to_pylist() == [orjson.dumps(f).decode() for f in floats]
    ints = [0, -1, 2**62, -(2**62), None, 7]
    assert js.ints(pa.array(ints, pa.int64())).to_pylist() == [orjson.dumps(i).decode() for i in ints]
    assert js.bools(pa.array([True, False, None])).to_pylist() == ["true", "false", "null"]
    times = [
        dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 16, 0, 1, 5, tzinfo=dt.UTC),
        dt.datetime(999, 1, 2, 3, 4, 5, 999999, tzinfo=dt.UTC),
        None,
    ]
    options = orjson.OPT_PASSTHROUGH_DATETIME
    expected = [orjson.dumps(t, default=str, option=options).decode() for t in times]
    assert js.times(pa.array(times, pa.timestamp("us", tz="UTC"))).to_pylist() == expected


def _orjson_jsonl(batch: object) -> bytes:
    """The jsonl lines as the row-by-row writer wrote them: orjson of each nested conversation."""
    import orjson

    from feedback.export.dataset import conversation_rows

    options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE
    return b"".join(orjson.dumps(c, default=str, option=options) for c in conversation_rows(batch))


def _orjson_arena(batch: object, tally: object) -> bytes:
    """Battle records as the row-by-row writer wrote them."""
    import orjson

    from db.vocabulary import PANES, arm_of
    from feedback.export.arena import FASTCHAT_WINNERS
    from feedback.export.arms import arm_names
    from feedback.export.dataset import conversation_rows

    out = []
    for conversation in conversation_rows(batch):
        panes = {pane: arm_of(pane, conversation.handoff_side) for pane in PANES}
        for turn in conversation.turns:
            off, decision = turn.answers.get("off"), turn.decision
            names = arm_names(
                off.model if off else None,
                decision.policy if decision else None,
                decision.threshold if decision else None,
            )
            for vote in turn.votes:
                if vote.winner not in FASTCHAT_WINNERS:
                    tally.skipped["identical votes (no winner)"] += 1
                    continue
                record = {
                    "question_id": f"{conversation.id}-{turn.index}",
                    "model_a": names[panes["a"]],
                    "model_b": names[panes["b"]],
                    "winner": FASTCHAT_WINNERS[vote.winner],
                    "judge": conversation.participant,
                    "conversation_a": conversation.messages(panes["a"], turn.index),
                    "conversation_b": conversation.messages(panes["b"], turn.index),
                    "turn": turn.index + 1,
                    "anony": True,
                    "language": turn.language or "unknown",
                    "tstamp": vote.created_at.timestamp(),
                }
                out.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(out)


def _orjson_dpo(batch: object, tally: object) -> bytes:
    """Preference pairs as the row-by-row writer wrote them."""
    import orjson

    from db.vocabulary import DECIDED, SHOWN_ARMS
    from feedback.export.dataset import conversation_rows

    out = []
    for conversation in conversation_rows(batch):
        for turn in conversation.turns:
            for vote in turn.votes:
                stars = {arm: vote.ratings[arm].stars for arm in SHOWN_ARMS if arm in vote.ratings}
                by_stars = None
                if stars.get("on") is not None and stars.get("off") is not None and stars["on"] != stars["off"]:
                    by_stars = "on" if stars["on"] > stars["off"] else "off"
                preferred = None
                if vote.winner_arm in DECIDED:
                    if by_stars is not None and by_stars != vote.winner_arm:
                        tally.skipped["decided votes left out: stars contradict the vote"] += 1
                    else:
                        tally.skipped["decided votes read"] += 1
                        preferred = vote.winner_arm
                elif vote.winner_arm == "tie" and by_stars is not None:
                    tally.skipped["ties ordered by stars read"] += 1
                    preferred = by_stars
                else:
                    tally.skipped[f"{vote.winner_arm} votes left out"] += 1
                if preferred is None:
                    continue
                off, on = turn.answers.get("off"), turn.answers.get("on")
                if off is None or on is None or off.text == on.text:
                    tally.skipped["pairs left out: answers identical or missing"] += 1
                    continue
                history_off = conversation.messages("off", turn.index - 1) if turn.index else []
                if history_off != (conversation.messages("on", turn.index - 1) if turn.index else []):
                    tally.skipped["pairs left out: arms had different earlier answers"] += 1
                    continue
                answers = {"on": on.text, "off": off.text}
                other = "off" if preferred == "on" else "on"
                pair = {
                    "prompt": [*history_off, {"role": "user", "content": turn.prompt}],
                    "chosen": [{"role": "assistant", "content": answers[preferred]}],
                    "rejected": [{"role": "assistant", "content": answers[other]}],
                }
                out.append(orjson.dumps(pair, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(out)


def test_json_formats_are_the_row_by_row_writers_byte_for_byte(db_url: str, seeded: dict) -> None:
    """jsonl, arena and dpo are built column-wise in Arrow; batch by batch their bytes (and the data card's
    counts) equal what orjson wrote from the nested rows, on each database, with hostile texts, PII, a turn
    without votes, answers missing, ties and multi-turn conversations in it."""
    from feedback.export.arena import battle_lines
    from feedback.export.dataset import Tally, iter_batches
    from feedback.export.dpo import pair_lines
    from feedback.export.jsonl import conversation_lines
    from feedback.vote_flags import flag_lookup

    event_id = make_event(db_url, "HOST-J", "sf")
    with session_scope(db_url) as session:
        participant = join_event(session, session.get(Event, event_id))
        conversation = start_conversation(session, participant)
        for i, text in enumerate(HOSTILE_TEXTS[5:12]):  # PostgreSQL refuses NUL in text
            text = text.replace("\x00", "")
            on_text = HOSTILE_TEXTS[-i].replace("\x00", "")
            record = turn_record(text, off_text=f"off {text}\x01", on_text=on_text, handed_off=i % 2 == 0)
            record_turn(session, conversation.id, record)
        hostile = conversation.id
    with session_scope(db_url) as session:
        submit_vote(session, VoteSubmission("k-json", hostile, "tie", 'a,"b"\n', {"a": PaneRating(4, ["clear"])}))
    flags = flag_lookup(db_url, ExportFilters())
    for signals, flag_of in ((True, flags), (False, None)):
        ours, theirs = Tally(), Tally()
        written = {"jsonl": [], "arena": [], "dpo": []}
        expected = {"jsonl": [], "arena": [], "dpo": []}
        for batch in iter_batches(
            db_url,
            ExportFilters(),
            salt=b"s",
            redact_pii=True,
            tally=Tally(),
            batch=7,
            signals=signals,
            flag_of=flag_of,
        ):
            written["jsonl"].append(conversation_lines(batch))
            expected["jsonl"].append(_orjson_jsonl(batch))
            written["arena"].append(battle_lines(batch, ours)[0])
            expected["arena"].append(_orjson_arena(batch, theirs))
            written["dpo"].append(pair_lines(batch, ours)[0])
            expected["dpo"].append(_orjson_dpo(batch, theirs))
        for fmt in written:
            assert written[fmt] == expected[fmt], fmt
            assert b"".join(written[fmt]), fmt
        assert ours.skipped == theirs.skipped and ours.skipped["ties ordered by stars read"] + 1
    assert b"[EMAIL]" in b"".join(written["jsonl"]) and b"\\u0001" in b"".join(written["jsonl"])


def test_decision_signals_text_is_orjson_of_the_redacted_signals() -> None:
    """``dataset._signals`` rewrites plain stored objects in Arrow and decodes the rest: either way each text is
    orjson's text of the stored JSON decoded and redacted, as the row-by-row path wrote it (stored by json.dumps,
    as SQLAlchemy's JSON type stores it)."""
    import json

    import orjson
    import pyarrow as pa

    from feedback.export.dataset import Tally, _cleaned, _Cleaner, _json, _signals

    values = [
        {"tokens": 165.0, "min_logprob": -8.214701732993927, "scores": {"confidence": 0.6, "never": 0.0}},
        {"a": 1e-05, "b": 1e16, "c": -0.0, "d": 123456789012345.6, "e": 10**18, "f": True, "g": None},
        {"reason": "mail josé@correo.es", "notes": ["OPENAI_API_KEY=abcd1234efgh", 3]},
        {"ü": 1, "key with space": 2, 'q"uote': 3, "tab\t": 4.5},
        {},
        {"nested": {"deeper": {"x": 0.0001, "y": 9999999999999998.0}}},
    ]
    stored = [json.dumps(value) for value in values] + [None, "null", "0", "[]", '"text 555-0199-1234"']
    clean = _Cleaner(Tally(), redact_pii=True)
    expected = [orjson.dumps(_cleaned(_json(text) or {}, clean)).decode() for text in stored]
    assert _signals(pa.array(stored, pa.string()), clean).to_pylist() == expected


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_two_processes_write_what_one_process_writes(sqlite_url: str, tmp_path: Path, fmt: str) -> None:
    """``feedback.export.parts``: the halves written by two processes and joined are one process's bytes, with
    the same data card (counts, events, redactions), on the whole selection and on selections of 0 and 1."""
    from feedback.demo_data import Plant

    generate(sqlite_url, 300, seed=9, plant=Plant(bots=0.2, origin_leak=0.3))
    event_id = make_event(sqlite_url, "PII-1", "apac")
    with session_scope(sqlite_url) as session:
        participant = join_event(session, session.get(Event, event_id))
        conversation = start_conversation(session, participant)
        record_turn(session, conversation.id, turn_record(PII_PROMPT + '\n"quoted", \\ \x01', category="coding"))
    with session_scope(sqlite_url) as session:
        submit_vote(session, VoteSubmission("k-pii", conversation.id, "a", INJECTION, {"a": PaneRating(2, ["wrong"])}))
    selections = (
        ("all", ExportFilters()),
        ("one", ExportFilters(event="PII-1")),
        ("none", ExportFilters(event="NONE")),
    )
    for name, filters in selections:
        one = write_export(sqlite_url, fmt, tmp_path / f"one-{name}.{fmt}", filters, salt=b"s", processes=1)
        two = write_export(sqlite_url, fmt, tmp_path / f"two-{name}.{fmt}", filters, salt=b"s", processes=2)
        assert two.worker_peak_mib > 0 and one.worker_peak_mib == 0  # the second really ran in two processes
        assert two.path.read_bytes() == one.path.read_bytes()
        assert (two.rows, two.tally) == (one.rows, one.tally)
        cards = [
            [line for line in r.card_path.read_text().replace(r.path.name, "x").splitlines() if "created:" not in line]
            for r in (one, two)
        ]
        assert cards[0] == cards[1]
        assert not list(tmp_path.glob("*.part"))  # the worker's file is gone once appended
    assert b"alice.smith@example.org" not in (tmp_path / f"two-one.{fmt}").read_bytes()
    assert one.tally.conversations == 0  # the last selection, "none": both halves empty
