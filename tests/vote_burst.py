"""Many threads submitting votes at once while a test breaks the database underneath them.

Each submission is for its own conversation round; half of them are sent twice from two threads
(a double click, a second tab). What the app said is recorded per submission: confirmed (an id
came back) or reported as not saved (``DatabaseUnavailable``, which the page shows and retries).
Anything else escaping ``save_vote`` is a failure of the app.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from db.models import Conversation, Participant, Turn, Vote, utcnow
from db.session import DatabaseUnavailable, session_scope
from feedback.votes import PaneRating, VoteSubmission, save_vote
from tests.factories import make_event


@dataclass
class BurstOutcome:
    submissions: list[VoteSubmission]
    confirmed: dict[str, int] = field(default_factory=dict)  # idempotency key -> vote id
    not_saved: dict[str, VoteSubmission] = field(default_factory=dict)
    escaped: list[str] = field(default_factory=list)  # exceptions the app let through: must stay empty
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def attempts(self) -> int:
        return len(self.confirmed) + len(self.not_saved)


def rounds(url: str, count: int, code: str | None = None) -> list[VoteSubmission]:
    """``count`` participants, each with a conversation of one turn, and one submission per round."""
    code = code or f"BURST-{uuid.uuid4().hex[:6]}"
    event_id = make_event(url, code, "sf")
    with session_scope(url) as session:
        participants = [
            Participant(event_id=event_id, pseudonym=uuid.uuid4().hex, consented_at=utcnow()) for _ in range(count)
        ]
        session.add_all(participants)
        session.flush()
        conversations = [
            Conversation(event_id=event_id, participant_id=p.id, handoff_side="a" if i % 2 else "b")
            for i, p in enumerate(participants)
        ]
        session.add_all(conversations)
        session.flush()
        turns = [Turn(conversation_id=c.id, index=0, prompt=f"prompt {i}") for i, c in enumerate(conversations)]
        session.add_all(turns)
        session.flush()
        return [
            VoteSubmission(
                idempotency_key=uuid.uuid4().hex,
                conversation_id=c.id,
                winner=("a", "b", "tie", "both_bad")[i % 4],
                comment=f"comment {i}",
                ratings={"a": PaneRating(stars=1 + i % 5, tags=["helpful"] if i % 3 else [])},
                turn_id=t.id,
            )
            for i, (c, t) in enumerate(zip(conversations, turns, strict=True))
        ]


def burst(
    url: str,
    submissions: list[VoteSubmission],
    *,
    threads: int,
    fault: Callable[[], None],
    fault_after: int,
    pause_s: float = 0.05,
) -> BurstOutcome:
    """Submit from ``threads`` threads; once ``fault_after`` are confirmed, run ``fault`` (which breaks
    and repairs the database) while the threads go on."""
    outcome = BurstOutcome(submissions)
    doubled = submissions + submissions[::2]  # every other submission arrives twice
    shares = [doubled[i::threads] for i in range(threads)]

    def submit(share: list[VoteSubmission]) -> None:
        for submission in share:
            try:
                vote_id = save_vote(url, submission, allowed_tags=["helpful"])
            except DatabaseUnavailable:
                with outcome.lock:
                    if submission.idempotency_key not in outcome.confirmed:
                        outcome.not_saved[submission.idempotency_key] = submission
            except Exception as error:  # noqa: BLE001 - recorded: the test fails on any
                with outcome.lock:
                    outcome.escaped.append(f"{type(error).__name__}: {error}"[:300])
            else:
                with outcome.lock:
                    previous = outcome.confirmed.setdefault(submission.idempotency_key, vote_id)
                    if previous != vote_id:
                        outcome.escaped.append(f"one key confirmed as two votes: {previous} and {vote_id}")
                    outcome.not_saved.pop(submission.idempotency_key, None)
            time.sleep(pause_s)

    workers = [threading.Thread(target=submit, args=(share,), daemon=True) for share in shares]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120
    while len(outcome.confirmed) < fault_after and time.monotonic() < deadline:
        time.sleep(0.01)
    fault()
    for worker in workers:
        worker.join(timeout=300)
    return outcome


def stored_votes(url: str, keys: list[str]) -> dict[str, list[int]]:
    """Vote ids stored under each idempotency key."""
    with session_scope(url) as session:
        rows = session.execute(select(Vote.idempotency_key, Vote.id).where(Vote.idempotency_key.in_(keys))).all()
    found: dict[str, list[int]] = {key: [] for key in keys}
    for key, vote_id in rows:
        found[key].append(vote_id)
    return found


def votes_per_round(url: str, conversation_ids: list[int]) -> int:
    """The largest number of votes any one conversation round holds (must be at most 1)."""
    with session_scope(url) as session:
        counts = session.scalars(
            select(func.count())
            .select_from(Vote)
            .where(Vote.conversation_id.in_(conversation_ids))
            .group_by(Vote.conversation_id, Vote.turn_id)
        ).all()
    return max(counts, default=0)
