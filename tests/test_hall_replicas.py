"""Two ``handoff serve`` replicas of one event hall, driven at once in real headless Chromium (Debian's).

The hall: a fresh PostgreSQL database of its own, Redis as the shared limit store (a key prefix of its own),
llama.cpp's server on the bundled GGUF as the local engine (``HANDOFF_LOCAL_ENGINE=openai``), the cloud
stand-in as the cloud (reached through a real proxy that can keep the cloud from answering for a while), and
two replicas with identical settings, each its own Streamlit server on its own port. Four attendees, two per
replica, each in a browser context of their own, join, consent, prompt, vote and save feedback, then do a
second round on the same conversation. Afterwards the database must hold exactly the votes the pages
confirmed, and the limits must have held across the replicas:

- the event's running-turn cap (2): while one turn per replica waits for the cloud, an attendee on each
  replica is told the hall is busy, though their own replica runs only one turn;
- the per-participant cloud-call limit (2 an hour, in Redis): an attendee who used both calls on replica 1
  opens replica 2 (the signed cookie brings the same participant back there), and the cloud call of that
  prompt is refused; the page says so at the reveal, and the stored decision and Redis agree.

The attendees keep at most two turns running at once among themselves afterwards, so the only refusals
are the two the test causes. Every wait is generous (a hang guard, not a speed target): the machine may be
loaded.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.hall import engine_server, forget_rate_limits, replica_env
from db import session as db_session
from db.models import Answer, Conversation, HandoffDecision, Participant, Turn, TurnSlot, Vote
from db.session import session_scope
from playground.engine.model_store import resolve_model
from playground.handoff.budget import ParticipantRateLimit, rate_limiter
from playground.settings import Settings, url_host
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, MODEL_CACHE, RUN_DONE, _postgres_database, free_port, served
from tests.factories import make_event
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LONG = 600_000  # ms per step, as the other browser tests: a loaded 2-core machine is slow, not broken
EVENT = "HALL-2026"
CAP = 2  # turns answered at once in the event, across replicas
CLOUD_CALLS = 2  # per participant per hour, across replicas
CHAT = "Ask anything: both answers arrive side by side"
BUSY = f"The hall is busy: {CAP} answers are being written right now (the most at once is {CAP})"
CLOUD_REFUSED = "You reached the limit of cloud requests for now, so this answer stayed local."
WINNERS = {"A is better": "a", "B is better": "b", "Tie": "tie", "Both are bad": "both_bad"}


@dataclass
class Hall:
    url: str  # the database
    replicas: tuple[str, str]  # base URLs
    proxy: FaultProxy  # between the replicas and the cloud stand-in
    env: dict[str, str]


@contextmanager
def _database() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture
def hall(standin: Settings, tmp_path: Path) -> Iterator[Hall]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make browser`")
    pytest.importorskip("playwright.async_api")
    with ExitStack() as stack:
        url = stack.enter_context(_database())
        db_session.upgrade(url)
        make_event(url, EVENT, "sf", name="Hall Night", city="San Francisco", handoff_threshold=0.0, ui_language="en")
        proxy = stack.enter_context(FaultProxy(standin.standin_host, standin.standin_port))
        engine = stack.enter_context(engine_server("llama.cpp server", tmp_path))
        env = replica_env(url, standin.standin_port, 16, **engine.env) | {
            "HANDOFF_DATA_DIR": str(tmp_path),
            "HANDOFF_CLOUD_BASE_URL": proxy.base_url,
            "HANDOFF_CLOUD_MODEL": resolve_model("bundled:smollm2", MODEL_CACHE),
            "HANDOFF_CLOUD_LOCAL_DECODING": "true",  # as with the stand-in reached directly
            "HANDOFF_CLOUD_TIMEOUT_S": "300",
            "HANDOFF_TEMPERATURE": "1.0",  # the panes differ when the cloud answers
            "HANDOFF_SHADOW_RATE": "0",  # every cloud call is a handoff: the count below is exact
            "HANDOFF_CLOUD_RATE_LIMIT": f"{CLOUD_CALLS}/hour",
            "HANDOFF_MAX_RUNNING_TURNS_PER_EVENT": str(CAP),
        }
        stack.callback(forget_rate_limits, env)  # the shared Redis keeps nothing of this hall
        handoff = str(Path(sys.executable).with_name("handoff"))
        replicas = []
        for number in (1, 2):
            port = free_port()
            replica = {**os.environ, **env, "HANDOFF_PORT": str(port), "HANDOFF_HOST": "127.0.0.1"}
            log = tmp_path / f"replica{number}.log"
            replicas.append(stack.enter_context(served([handoff, "serve"], port, log, replica, timeout_s=600)))
        yield Hall(url, (replicas[0], replicas[1]), proxy, env)


@dataclass
class Confirmed:
    """One round's feedback as the page confirmed it ("Saved."): pane A's stars, or the one rating."""

    prompt: str
    winner: str
    stars: int


@dataclass
class Attendee:
    name: str
    replica: str
    page: object = None  # playwright Page
    confirmed: list[Confirmed] = field(default_factory=list)
    busy_seen: bool = False

    async def join(self, browser) -> None:  # noqa: ANN001 - a playwright Browser
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(LONG)
        self.page = await context.new_page()
        await self.page.goto(f"{self.replica}/?event={EVENT}")
        await self.page.get_by_text("Hall Night · San Francisco").wait_for()
        await self.page.get_by_role("button", name="I agree, let's start").click()
        await self.page.get_by_placeholder(CHAT).wait_for()

    def prompt(self, round_: int) -> str:
        return f"{self.name}, round {round_}: name one fruit."

    async def send(self, text: str) -> None:
        chat = self.page.get_by_placeholder(CHAT)
        await chat.fill(text)
        await chat.press("Enter")

    async def told_busy(self, text: str) -> None:
        """Send while the hall is full: the page says so, and the prompt can be sent again later."""
        await self.send(text)
        await self.page.get_by_text(BUSY).wait_for()
        self.busy_seen = True

    async def vote(self, prompt: str, turn: int, winner: str, stars: int) -> None:
        """Wait for both panes of turn ``turn``, vote (or rate, when the panes are identical), save."""
        page = self.page
        await page.get_by_text(f"Turn {turn} of 10").wait_for()
        await page.get_by_text("Save your feedback to reveal the sides.").wait_for()  # the round's form, complete
        await page.locator(RUN_DONE).wait_for()  # ...and the previous round's widgets gone
        if await page.get_by_text("Both answers are identical").count():
            winner, pane = "identical", "both"
        else:
            await page.locator("[class*='st-key-winner_']").get_by_text(winner).click()
            winner, pane = WINNERS[winner], "a"
        stars_widget = page.locator(f"[class*='st-key-stars_{pane}_']")
        await stars_widget.get_by_role("radio", name=f"{stars} out of 5 stars").click()
        await page.get_by_role("button", name="Save feedback").click()
        await page.get_by_text("Saved. You can change it until your next prompt.").wait_for()
        self.confirmed.append(Confirmed(prompt, winner, stars))


async def _until(check: Callable[[], bool], what: str, timeout_s: float = LONG / 1000) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        await asyncio.sleep(0.5)


def _running(url: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(TurnSlot).where(TurnSlot.finished_at.is_(None)))


async def _drive(hall: Hall) -> list[Attendee]:
    from playwright.async_api import async_playwright, expect

    one, two = hall.replicas
    attendees = [Attendee("Ada", one), Attendee("Bo", one), Attendee("Cy", two), Attendee("Di", two)]
    ada, bo, cy, di = attendees
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await asyncio.gather(*(a.join(browser) for a in attendees))

        # The running-turn cap across replicas: one turn on each replica, both waiting for the cloud.
        turns = asyncio.Semaphore(CAP)  # afterwards the attendees keep to the cap themselves
        hall.proxy.hold()
        for _ in range(CAP):
            await turns.acquire()
        await asyncio.gather(ada.send(ada.prompt(1)), cy.send(cy.prompt(1)))
        await _until(lambda: len(hall.proxy.seen) == CAP, "both first turns to call the cloud")
        assert _running(hall.url) == CAP
        await asyncio.gather(bo.told_busy(bo.prompt(1)), di.told_busy(di.prompt(1)))  # each replica runs one turn
        hall.proxy.let_go()

        async def rounds(attendee: Attendee, first_sent: bool, winners: tuple[str, str]) -> None:
            if not first_sent:
                await turns.acquire()
                await attendee.send(attendee.prompt(1))
            await attendee.vote(attendee.prompt(1), 1, winners[0], 4)
            turns.release()
            async with turns:  # the second round, on the same conversation
                await attendee.send(attendee.prompt(2))
                await attendee.vote(attendee.prompt(2), 2, winners[1], 2)

        await asyncio.gather(
            rounds(ada, True, ("A is better", "A is better")),  # the same choice twice: round 2 must not undo it
            rounds(bo, False, ("B is better", "Tie")),
            rounds(cy, True, ("A is better", "B is better")),
            rounds(di, False, ("Tie", "A is better")),
        )

        # The cloud-call limit across replicas: Ada used both her calls on replica 1; now replica 2.
        page = await ada.page.context.new_page()
        ada.page = page
        await page.goto(f"{two}/?event={EVENT}")
        consent = page.get_by_role("button", name="I agree, let's start")
        await page.get_by_placeholder(CHAT).or_(consent).wait_for()
        assert not await consent.count(), "replica 2 asked Ada for consent again: the signed cookie did not carry"
        async with turns:
            await ada.send(ada.prompt(3))
            await ada.vote(ada.prompt(3), 1, "A is better", 5)
        await page.get_by_role("button", name="Reveal which side had handoff").click()
        await expect(page.get_by_text(CLOUD_REFUSED)).to_be_visible()
        await browser.close()
    return attendees


def _max_overlap(slots: list[TurnSlot]) -> int:
    """The most turns that were running at one moment, from their stored start and end."""
    edges = sorted([(s.started_at, 1) for s in slots] + [(s.finished_at, -1) for s in slots])
    running = most = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start (+1)
        running += step
        most = max(most, running)
    return most


def test_two_replicas_share_one_database_and_the_limits_hold(hall: Hall) -> None:
    started = time.monotonic()
    attendees = asyncio.run(_drive(hall))
    ada = attendees[0]
    assert all(a.busy_seen for a in attendees[1::2])
    print(f"two replicas, {len(attendees)} attendees: {time.monotonic() - started:.0f} s, load {os.getloadavg()}")

    with session_scope(hall.url) as session:
        participant_of = {
            t.prompt: c.participant_id for t, c in session.execute(select(Turn, Conversation).join(Conversation))
        }
        who = {a.name: {participant_of[c.prompt] for c in a.confirmed} for a in attendees}
        assert all(len(ids) == 1 for ids in who.values()), who  # Ada on replica 2 is still Ada
        assert len(session.scalars(select(Participant)).all()) == len(attendees)

        # Exactly what the pages confirmed: no vote lost, none stored twice, each under its participant.
        stored = []
        for vote in session.scalars(select(Vote)):
            turn = session.get(Turn, vote.turn_id)
            conversation = session.get(Conversation, vote.conversation_id)
            shown_as_a = "on" if conversation.handoff_side == "a" else "off"
            stars = {r.arm: r.stars for r in vote.ratings}
            pane_a = stars.get("both" if vote.winner == "identical" else shown_as_a)
            assert vote.participant_id == conversation.participant_id == participant_of[turn.prompt]
            stored.append((turn.prompt, vote.winner, pane_a))
        confirmed = [(c.prompt, c.winner, c.stars) for a in attendees for c in a.confirmed]
        assert sorted(stored) == sorted(confirmed)
        assert len(confirmed) == 9

        # The running-turn cap held across both replicas; the refused prompts took no slot.
        slots = session.scalars(select(TurnSlot)).all()
        assert len(slots) == 9 and all(s.finished_at is not None for s in slots)
        assert _max_overlap(slots) == CAP

        # Every turn answered by llama.cpp's server; Ada's third cloud call refused on replica 2.
        decisions = {t.prompt: d for d, t in session.execute(select(HandoffDecision, Turn).join(Turn))}
        refused = ada.prompt(3)
        assert all(d.handed_off for d in decisions.values())  # the policy wanted the cloud every time (threshold 0)
        assert {p: d.blocked_by for p, d in decisions.items() if d.blocked_by} == {refused: "rate_limit"}
        refused_on = select(Answer.source).join(Turn).where(Turn.prompt == refused, Answer.arm == "on")
        assert session.scalar(refused_on) == "local"
        local = session.scalars(select(Answer).where(Answer.source == "local")).all()
        servers = {url_host(url) for url in hall.env["HANDOFF_LOCAL_BASE_URL"].split(",")}
        assert {a.engine for a in local} == {"openai"} and {a.base_url_host for a in local} <= servers
        cloud = session.scalars(select(Answer).where(Answer.source == "cloud")).all()
        assert len(cloud) == 8 and not any(a.error_kind for a in cloud)

    # Redis counted each participant's calls wherever they were made: every window is full, none over.
    rate_limiter.cache_clear()
    limit = ParticipantRateLimit(
        f"{CLOUD_CALLS}/hour",
        storage_uri=hall.env["HANDOFF_RATE_LIMIT_STORAGE"],
        prefix=hall.env["HANDOFF_RATE_LIMIT_PREFIX"],
    )
    for ids in who.values():
        (participant,) = ids
        stats = limit.limiter.get_window_stats(limit.item, limit.prefix, limit.scope, str(participant))
        assert stats.remaining == 0
    rate_limiter.cache_clear()
