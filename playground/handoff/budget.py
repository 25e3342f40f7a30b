"""Money and fairness guards on cloud calls: the per-event budget and the per-participant rate limit.

The budget is never exceeded, also under concurrent requests from many sessions or processes:
before a call, the most it can cost is *reserved* with one conditional ``UPDATE`` (the database
serializes concurrent updates of the event row, so two reservations cannot both take the last
money); after the call the reservation is *settled* to the real cost from the reported usage.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from limits import parse, storage, strategies
from sqlalchemy import select, update

from db.models import Event
from db.session import session_scope
from playground.engine.cloud import CloudResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    event_id: int
    amount: Decimal


class EventBudget:
    """The cloud budget of one event (``Event.cloud_budget``; NULL means no limit)."""

    def __init__(self, database_url: str, event_id: int) -> None:
        self.url = database_url
        self.event_id = event_id

    def reserve(self, amount: Decimal) -> Reservation | None:
        """Take ``amount`` out of the remaining budget, atomically; None when it does not fit."""
        statement = (
            update(Event)
            .where(Event.id == self.event_id)
            .where(Event.cloud_budget.is_(None) | (Event.cloud_spent + amount <= Event.cloud_budget))
            .values(cloud_spent=Event.cloud_spent + amount)
            .execution_options(synchronize_session=False)
        )
        with session_scope(self.url) as session:
            reserved = session.execute(statement).rowcount == 1
        return Reservation(self.event_id, amount) if reserved else None

    def settle(self, reservation: Reservation, result: CloudResult) -> Decimal:
        """Replace the reservation by what the call cost; returns the amount charged.

        Unknown usage keeps the whole reservation (a timed-out call may still be billed), except
        when the call surely cost nothing (refused, 429, 5xx before any output).
        """
        if result.cost is not None:
            charged = result.cost
        elif result.surely_unbilled:
            charged = Decimal(0)
        else:
            charged = reservation.amount
        self._replace(reservation, charged)
        return charged

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back whole: the call it was made for was never started."""
        self._replace(reservation, Decimal(0))

    def _replace(self, reservation: Reservation, charged: Decimal) -> None:
        statement = (
            update(Event)
            .where(Event.id == reservation.event_id)
            .values(cloud_spent=Event.cloud_spent - reservation.amount + charged)
            .execution_options(synchronize_session=False)
        )
        with session_scope(self.url) as session:
            session.execute(statement)

    def state(self) -> tuple[Decimal | None, Decimal]:
        """(budget, spent) as stored now."""
        with session_scope(self.url) as session:
            budget, spent = session.execute(
                select(Event.cloud_budget, Event.cloud_spent).where(Event.id == self.event_id)
            ).one()
        return budget, Decimal(spent or 0)


_storage_lock = threading.Lock()


@lru_cache(maxsize=8)
def rate_limiter(storage_uri: str) -> strategies.MovingWindowRateLimiter:
    """One limiter per storage per process: ``memory://`` is shared by this process's sessions only,
    ``redis://…`` by every replica pointed at it.

    The storage is made under a lock: the first turns of a fresh replica arrive together, and ``limits``
    imports the storage's client lazily, reading its version from ``sys.modules`` while another thread
    may still be importing it (a half-imported ``redis`` is "version 0.0.0": the turn failed with a
    ConfigurationError).
    """
    with _storage_lock:
        return strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))


class ParticipantRateLimit:
    """At most N cloud calls per participant per window (``cloud_rate_limit``, e.g. ``10/minute``).

    Counted in the ``limits`` storage named by ``rate_limit_storage``. When that storage cannot be
    reached the call is refused (``rate_limit``): the budget and the local answer are unaffected.
    """

    def __init__(
        self, limit: str, scope: str = "cloud", storage_uri: str = "memory://", prefix: str = "handoff"
    ) -> None:
        self.item = parse(limit)
        self.scope = scope
        self.prefix = prefix
        self.limiter = rate_limiter(storage_uri)

    def allow(self, participant_id: int) -> bool:
        """Count one call for the participant; False when the window is full (not counted)."""
        try:
            return self.limiter.hit(self.item, self.prefix, self.scope, str(participant_id))
        except Exception as error:  # noqa: BLE001 - any storage error: refuse the cloud call, keep the turn
            log.warning("rate-limit storage unavailable (%s): cloud call refused", type(error).__name__)
            return False


def event_shadow_rate(database_url: str, event_id: int) -> float | None:
    """The event's own shadow rate ε, or None to use the settings' default."""
    with session_scope(database_url) as session:
        return session.scalar(select(Event.shadow_rate).where(Event.id == event_id))
