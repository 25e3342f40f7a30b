"""A process on the attendee submit path, for ``kill -9`` tests: it stores turns (prompt, two
answers, the handoff decision) and votes with ratings through ``feedback.capture``, as the page does.

    python -m tests.submit_worker URL EVENT_CODE MARKER [PAUSE_AT]

Each stored round appends a line to MARKER. With ``PAUSE_AT`` = n it stops inside its n-th write
transaction (0: the first turn, 1: its vote, 2: the next turn…), after everything was flushed and
before the commit, and writes MARKER.inside: the parent kills it there.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session

from db.models import Event
from db.session import get_engine, in_transaction
from feedback.capture import join_event, record_turn, start_conversation
from feedback.records import TurnRecord
from feedback.votes import PaneRating, VoteSubmission, save_vote
from tests.factories import turn_record


def large_turn(index: int) -> TurnRecord:
    """A large turn (long prompt and answers), so a commit takes long enough to be interrupted."""
    return turn_record(
        f"prompt {index} " + "x" * 2000,
        score=0.7,
        language=None,
        off_text="local answer " * 200,
        on_text="cloud answer " * 200,
        base_url_host="127.0.0.1:1",
    )


def main(url: str, code: str, marker: Path, pause_at: int | None) -> None:
    def join(session: Session) -> tuple[int, int]:
        found = session.scalar(select(Event).where(Event.code == code))
        participant = join_event(session, found)
        return participant.id, start_conversation(session, participant).id

    participant_id, conversation_id = in_transaction(url, join)
    commits = 0

    # the engine's commit event: every transaction's, a Session's (after its flush and the rollups it
    # writes before COMMIT) and save_vote's on a bare Connection alike, just before the COMMIT is sent
    @event.listens_for(get_engine(url), "commit")
    def hold(_connection: Connection) -> None:
        nonlocal commits
        if commits == pause_at:
            marker.with_suffix(".inside").write_text("inside")
            time.sleep(600)  # killed here
        commits += 1

    for index in range(100_000):
        turn_id = in_transaction(url, lambda s, i=index: record_turn(s, conversation_id, large_turn(i)).id)
        submission = VoteSubmission(
            uuid.uuid4().hex,
            conversation_id,
            "a",
            "comment " * 50,
            {"a": PaneRating(4, ["helpful"]), "b": PaneRating(2, ["wrong_facts"])},
            turn_id=turn_id,
        )
        save_vote(url, submission)
        with marker.open("a") as out:
            out.write(f"{turn_id}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None)
