"""LLM-as-judge on voted pairs, kept apart from the human votes (table ``judge_verdicts``).

Every pair is judged twice, once with each arm's answer shown first, so a judge's position bias
cancels (MT-bench's pairwise prompt: answer ``[[A]]``, ``[[B]]`` or ``[[C]]`` for a tie). The judge is
any OpenAI-compatible chat endpoint behind ``ask``; tokens, cost and latency of each call are stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import and_, select
from sqlalchemy.orm import aliased

from db.models import Answer, Conversation, Event, HandoffDecision, JudgeVerdict, Turn, Vote
from db.session import session_scope

ORDERS = ("on_first", "off_first")
SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and answers "
    "the question better. Do not let the order of the responses, their length or the assistants' names influence "
    'you. Output your final verdict strictly in this format: "[[A]]" if assistant A is better, "[[B]]" if '
    'assistant B is better, and "[[C]]" for a tie.'
)
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


@dataclass(frozen=True)
class JudgeReply:
    text: str
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float


Ask = Callable[[list[dict[str, str]]], JudgeReply]
Price = Callable[[int, int], Decimal]


@dataclass(frozen=True)
class Pair:
    vote_id: int
    prompt: str
    on_text: str
    off_text: str


@dataclass
class JudgeRun:
    pairs: int = 0
    verdicts: int = 0
    unparsed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal(0)


def messages(prompt: str, first: str, second: str) -> list[dict[str, str]]:
    """The judge's chat: the question and both answers, ``first`` shown as assistant A."""
    user = (
        f"[User Question]\n{prompt}\n\n[The Start of Assistant A's Answer]\n{first}\n[The End of Assistant A's Answer]"
        f"\n\n[The Start of Assistant B's Answer]\n{second}\n[The End of Assistant B's Answer]"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def verdict_arm(reply: str, order: str) -> str | None:
    """The arm the reply picks (its last ``[[X]]``), or None when it names none."""
    found = _VERDICT.findall(reply)
    if not found:
        return None
    letter = found[-1]
    if letter == "C":
        return "tie"
    first, second = ("on", "off") if order == "on_first" else ("off", "on")
    return first if letter == "A" else second


def pairs_to_judge(url: str, event_code: str, model: str, limit: int | None = None) -> list[Pair]:
    """Visible votes of the event where the panes differed (handed off) and this judge has not ruled yet."""
    on, off = aliased(Answer), aliased(Answer)
    judged = select(JudgeVerdict.vote_id).where(JudgeVerdict.model == model)
    stmt = (
        select(Vote.id, Turn.prompt, on.text, off.text)
        .join(Conversation, Conversation.id == Vote.conversation_id)
        .join(Event, Event.id == Conversation.event_id)
        .join(Turn, Turn.id == Vote.turn_id)
        .join(HandoffDecision, HandoffDecision.turn_id == Turn.id)
        .join(on, and_(on.turn_id == Turn.id, on.arm == "on"))
        .join(off, and_(off.turn_id == Turn.id, off.arm == "off"))
        .where(
            Event.code == event_code.strip().upper(),
            HandoffDecision.handed_off,
            Vote.hidden_at.is_(None),
            Conversation.hidden_at.is_(None),
            Vote.winner_arm.in_(["on", "off", "tie", "both_bad"]),
            Vote.id.not_in(judged),
        )
        .order_by(Vote.id)
        .limit(limit)
    )
    with session_scope(url) as session:
        return [Pair(*row) for row in session.execute(stmt)]


def judge_pairs(
    url: str, pairs: list[Pair], model: str, ask: Ask, price: Price, base_url_host: str | None = None
) -> JudgeRun:
    """Ask the judge about every pair in both orders and store each verdict as it comes back."""
    run = JudgeRun()
    for pair in pairs:
        rows = []
        for order in ORDERS:
            first, second = (pair.on_text, pair.off_text) if order == "on_first" else (pair.off_text, pair.on_text)
            reply = ask(messages(pair.prompt, first, second))
            cost = price(reply.tokens_in or 0, reply.tokens_out or 0)
            arm = verdict_arm(reply.text, order)
            rows.append(
                JudgeVerdict(
                    vote_id=pair.vote_id,
                    model=model,
                    base_url_host=base_url_host,
                    order=order,
                    winner_arm=arm,
                    reply=reply.text,
                    tokens_in=reply.tokens_in,
                    tokens_out=reply.tokens_out,
                    cost=cost,
                    latency_ms=reply.latency_ms,
                )
            )
            run.verdicts += 1
            run.unparsed += arm is None
            run.tokens_in += reply.tokens_in or 0
            run.tokens_out += reply.tokens_out or 0
            run.cost += cost
        with session_scope(url) as session:  # both orders of a pair together: a rerun completes a half-done pair
            session.add_all(rows)
        run.pairs += 1
    return run


def openai_ask(client: object, model: str, max_tokens: int) -> Ask:
    """``ask`` through the official openai client (``client`` is an ``openai.OpenAI``), deterministic."""

    def ask(chat: list[dict[str, str]]) -> JudgeReply:
        start = time.perf_counter()
        response = client.chat.completions.create(  # type: ignore[attr-defined]
            model=model, messages=chat, max_tokens=max_tokens, temperature=0
        )
        usage = response.usage
        return JudgeReply(
            text=response.choices[0].message.content or "",
            tokens_in=usage.prompt_tokens if usage else None,
            tokens_out=usage.completion_tokens if usage else None,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    return ask
