"""The overview's rollups (db.rollups) against the rows, on real SQLite and PostgreSQL: after votes,
edits, hides and unhides, bulk demo data, the migration's backfill and concurrent writers."""

from __future__ import annotations

import threading
import unittest.mock
import uuid
from decimal import Decimal

from sqlalchemy import delete, func, select

from db import rollups
from db import session as db_session
from db.analytics import Scope, overview
from db.models import Conversation, Event, Rating, RollupCount, RollupEnergy, RollupLatency, RollupVote, Vote
from db.session import session_scope
from feedback.capture import join_event, record_turn, start_conversation
from feedback.demo_data import generate
from feedback.moderation import hide_comment, hide_conversation, unhide_comment, unhide_conversation
from feedback.votes import PaneRating, VoteSubmission, save_vote, submit_vote
from tests.factories import make_event, turn_record
from tests.organizer_data import Round, add_rounds, assert_rollups_match_rows

ROUNDS = [
    Round("on", handed_off=True, cost=Decimal("0.01"), latency_off=10, latency_on=100, tags_on=["accurate", "clear"]),
    Round("on", handed_off=True, cost=Decimal("0.02"), latency_off=20, latency_on=200, energy_off=0.1, energy_on=0.4),
    Round("off", handed_off=True, blocked_by="cloud_error", error_kind="timeout", latency_off=40, language="ja"),
    Round("tie", latency_off=50, latency_on=500, language=None, tags_on=["vague"], energy_off=0.2, energy_on=0.2),
    Round("both_bad", latency_off=7, latency_on=None, tags_on=["clear"]),
]


def _data(url: str) -> tuple[int, list[int]]:
    sf = make_event(url, "SF-R", "sf", cloud_budget=Decimal("5"))
    eu = make_event(url, "EU-R", "europe")
    make_event(url, "APAC-R", "apac")
    votes = add_rounds(url, sf, ROUNDS) + add_rounds(url, eu, ROUNDS[:3])
    return sf, votes


def test_rollups_equal_the_rows_through_edits_hides_and_demo_data(db_url: str) -> None:
    generate(db_url, 120, seed=5)  # bulk rows: rebuilt set-based at the end
    sf, votes = _data(db_url)
    assert_rollups_match_rows(db_url)
    with session_scope(db_url) as session:
        vote = session.get(Vote, votes[0])
        conversation_id, key = vote.conversation_id, vote.idempotency_key
        side = session.get(Conversation, conversation_id).handoff_side
    other = "a" if side == "b" else "b"
    with session_scope(db_url) as session:  # the same round voted again: verdict and tags change
        submit_vote(
            session,
            VoteSubmission(key, conversation_id, other, None, {side: PaneRating(tags=["vague", "vague", "slow"])}),
        )
    assert_rollups_match_rows(db_url)
    with session_scope(db_url) as session:
        hide_comment(session, votes[1], by="mod")
        hide_comment(session, votes[1], by="mod")  # twice: taken out once
        hide_conversation(session, session.get(Vote, votes[2]).conversation_id, by="mod")
        hide_conversation(session, session.get(Vote, votes[0]).conversation_id, by="mod")
    assert_rollups_match_rows(db_url)
    with session_scope(db_url) as session:  # a vote hidden inside a hidden conversation, then both back
        hide_comment(session, votes[0], by="mod")
        unhide_conversation(session, session.get(Vote, votes[0]).conversation_id)
    assert_rollups_match_rows(db_url)
    with session_scope(db_url) as session:
        unhide_comment(session, votes[0])
        unhide_comment(session, votes[1])
        unhide_conversation(session, session.get(Vote, votes[2]).conversation_id)
        record_turn(session, conversation_id, turn_record("And then?", handed_off=True, latency_off=3, latency_on=9))
    assert_rollups_match_rows(db_url)
    with session_scope(db_url) as session:
        numbers = overview(session, Scope(event_ids=(sf,)))
    assert numbers.turns == 6 and numbers.votes == 5 and numbers.latency[0].answers == 6


def test_migration_backfills_the_rollups_from_existing_rows(db_url: str) -> None:
    _data(db_url)
    generate(db_url, 60, seed=7)
    with session_scope(db_url) as session:
        hide_conversation(session, session.scalar(select(Conversation.id).limit(1)), by="mod")
    db_session.upgrade(db_url, "0008_decoding")  # drops the tables; the rows stay
    db_session.upgrade(db_url)
    with session_scope(db_url) as session:
        assert session.scalar(select(RollupLatency.answer_id).limit(1)) is not None
    assert_rollups_match_rows(db_url)


def test_rebuild_restores_rollups_lost_or_wrong(db_url: str) -> None:
    _data(db_url)
    with session_scope(db_url) as session:
        for table in (RollupCount, RollupVote, RollupEnergy, RollupLatency):
            session.execute(delete(table))
        rollups.rebuild(session)
    assert_rollups_match_rows(db_url)


def test_concurrent_writers_lose_no_increment(db_url: str) -> None:
    """Writers bumping the same rollup rows at once (same event, minute and verdict) all land."""
    event = make_event(db_url, "RACE", "sf")
    writers = 8
    conversations = []
    with session_scope(db_url) as session:
        for _ in range(writers * 3):
            conversation = start_conversation(session, join_event(session, session.get(Event, event)))
            record_turn(session, conversation.id, turn_record(handed_off=False))
            conversations.append((conversation.id, conversation.handoff_side))
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(index: int) -> None:
        barrier.wait()
        for conversation_id, side in conversations[index::writers]:
            try:
                save_vote(
                    db_url,
                    VoteSubmission(
                        uuid.uuid4().hex, conversation_id, side, None, {side: PaneRating(tags=["accurate"])}
                    ),
                )
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with session_scope(db_url) as session:
        numbers = overview(session, Scope(event_ids=(event,)))
    assert numbers.verdicts == {"on": writers * 3}
    assert numbers.top_tags == [("on", "accurate", writers * 3)]
    assert numbers.participants == writers * 3
    assert_rollups_match_rows(db_url)


def test_a_hide_during_a_vote_waits_for_it_and_takes_it_out(db_url: str) -> None:
    """A moderator hides a conversation while a vote on it is being saved: the hide waits for the vote's
    lock and then takes the vote out too (it never reads the conversation without the vote)."""
    event = make_event(db_url, "RACE-HIDE", "sf")
    with session_scope(db_url) as session:
        conversation = start_conversation(session, join_event(session, session.get(Event, event)))
        record_turn(session, conversation.id, turn_record(handed_off=False))
        conversation_id, side = conversation.id, conversation.handoff_side
    voting = db_session.session_factory(db_url)()
    submit_vote(voting, VoteSubmission(uuid.uuid4().hex, conversation_id, side, None, {side: PaneRating(tags=["x"])}))
    hidden = threading.Event()

    def hide() -> None:
        with session_scope(db_url) as session:
            hide_conversation(session, conversation_id, by="mod")
        hidden.set()

    thread = threading.Thread(target=hide)
    thread.start()
    assert not hidden.wait(1.0)  # waits for the vote's transaction
    voting.commit()
    voting.close()
    thread.join(30)
    assert hidden.is_set()
    with session_scope(db_url) as session:
        numbers = overview(session, Scope(event_ids=(event,)))
    assert (numbers.votes, numbers.conversations, numbers.turns, numbers.top_tags) == (0, 0, 0, [])
    assert_rollups_match_rows(db_url)


def _statements(db_url: str, submit) -> list[str]:  # noqa: ANN001 - a callable
    """The SQL statements ``submit()`` sends, as verb and table (BEGIN and COMMIT aside: the drivers send
    them themselves)."""
    from sqlalchemy import event as sa_event

    statements: list[str] = []
    engine = db_session.get_engine(db_url)

    def count(_connection, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        submit()
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    return [_verb_and_table(statement) for statement in statements]


def _verb_and_table(statement: str) -> str:
    words = statement.split()
    verb = words[0]
    table = words[words.index("FROM") + 1] if verb in ("SELECT", "DELETE") else words[2 if verb == "INSERT" else 1]
    return f"{verb} {table}"


def _one_conversation(db_url: str, code: str) -> tuple[int, str]:
    event = make_event(db_url, code, "sf")
    with session_scope(db_url) as session:
        conversation = start_conversation(session, join_event(session, session.get(Event, event)))
        record_turn(session, conversation.id, turn_record(handed_off=False))
        return conversation.id, conversation.handoff_side


def test_a_tagged_vote_sends_four_statements_on_postgresql_and_five_on_sqlite(db_url: str) -> None:
    """The vote path's SQL: the conversation locked in the statement that reads its latest turn and the
    vote already stored for the round or key, the vote and its rating inserted (one statement on
    PostgreSQL), one upsert per rollup table it changes (tags, verdict). Before the lookups moved into the
    locking statement there were seven; before the locked read was one statement, nine."""
    conversation_id, side = _one_conversation(db_url, "COUNT")
    submission = VoteSubmission(uuid.uuid4().hex, conversation_id, side, None, {side: PaneRating(tags=["x"])})
    statements = _statements(db_url, lambda: save_vote(db_url, submission))
    # PostgreSQL: the vote and its rating in one statement (INSERT INTO votes in a WITH, INSERT INTO ratings)
    written = ["WITH vote"] if db_url.startswith("postgresql") else ["INSERT votes", "INSERT ratings"]
    assert statements == ["SELECT conversations", *written, "INSERT rollup_counts", "INSERT rollup_votes"]
    assert_rollups_match_rows(db_url)


def test_a_repeated_vote_returns_the_same_id_and_stores_it_once(db_url: str) -> None:
    """A double click (the same key again) and a second tab (this round, another key) update the stored
    vote in place: same id, same rating row, the rollups moved from the old verdict and tags to the new."""
    conversation_id, side = _one_conversation(db_url, "AGAIN")
    other = "a" if side == "b" else "b"
    first = VoteSubmission(uuid.uuid4().hex, conversation_id, side, None, {side: PaneRating(tags=["x"])})
    vote_id = save_vote(db_url, first)
    with session_scope(db_url) as session:
        rating_uid = session.scalar(select(Rating.uid))
    ids: list[int] = []
    again = _statements(db_url, lambda: ids.append(save_vote(db_url, first)))
    assert ids == [vote_id]
    assert again == ["SELECT conversations", "UPDATE votes", "INSERT ratings"]  # nothing to add to the rollups
    changed = VoteSubmission(uuid.uuid4().hex, conversation_id, other, "changed", {side: PaneRating(3, ["y", "y"])})
    statements = _statements(db_url, lambda: save_vote(db_url, changed))
    assert statements == [
        "SELECT conversations",
        "UPDATE votes",
        "INSERT ratings",  # the arm's rating updated in place (ON CONFLICT)
        "INSERT rollup_counts",
        "INSERT rollup_votes",
    ]
    with session_scope(db_url) as session:
        assert session.scalar(select(Rating.uid)) == rating_uid
    assert_rollups_match_rows(db_url)
    unrated = _statements(
        db_url, lambda: save_vote(db_url, VoteSubmission(first.idempotency_key, conversation_id, "tie"))
    )
    assert unrated[:3] == ["SELECT conversations", "UPDATE votes", "DELETE ratings"]
    with session_scope(db_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.id, vote.idempotency_key, vote.winner, vote.comment) == (
            vote_id,
            first.idempotency_key,
            "tie",
            None,
        )
        assert vote.ratings == []
        assert session.scalar(select(func.count()).select_from(Vote)) == 1
    assert_rollups_match_rows(db_url)


def test_a_vote_stored_between_the_lookup_and_the_insert_is_updated_not_doubled(db_url: str) -> None:
    """Without the conversation's lock (the benchmark's before-rollups path), another tab's vote for the
    round can commit between the lookup and the INSERT: the INSERT then inserts nothing, and the second
    try reads that vote and updates it. (With the lock it cannot happen: the other tab's INSERT waits for
    the lock, or on PostgreSQL for the row's key-share lock its foreign key takes.)"""
    conversation_id, side = _one_conversation(db_url, "SKIP")
    raced: list[str] = []

    def other_tab_first(_connection, _cursor, statement, *_args) -> None:  # noqa: ANN001
        if "INSERT INTO votes " in statement and not raced:
            raced.append(statement)
            save_vote(db_url, VoteSubmission(uuid.uuid4().hex, conversation_id, side, "other tab"))

    from sqlalchemy import event as sa_event

    engine = db_session.get_engine(db_url)
    sa_event.listen(engine, "before_cursor_execute", other_tab_first)
    try:
        with unittest.mock.patch.object(rollups, "conversation_locked", lambda db, query: query):
            mine = VoteSubmission(uuid.uuid4().hex, conversation_id, "tie", "mine", {side: PaneRating(tags=["x"])})
            vote_id = save_vote(db_url, mine)
    finally:
        sa_event.remove(engine, "before_cursor_execute", other_tab_first)
    assert raced
    with session_scope(db_url) as session:
        vote = session.scalar(select(Vote))
        assert (vote.id, vote.winner, vote.comment) == (vote_id, "tie", "mine")
        assert session.scalar(select(func.count()).select_from(Vote)) == 1
    assert_rollups_match_rows(db_url)
