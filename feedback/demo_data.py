"""Seeded, realistic demo data: events in the three regions, conversations, answers, handoff
decisions with signals and per-policy scores, shadow answers, costs, votes, ratings, tags, comments.

Written with bulk Core inserts in batches (ids assigned here, no ORM objects), so a million votes
load in minutes. ``win_rate`` is the true probability that the handoff arm wins a decided vote;
decided votes only happen where the policy handed off (otherwise both panes show the same answer).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from scipy.special import expit, logit
from sqlalchemy import Connection, func, insert, select, text, update

from db import rollups
from db.models import Answer, Conversation, Event, HandoffDecision, JudgeVerdict, Participant, Rating, Turn, Vote
from db.session import get_engine
from db.vocabulary import BOTH, DECIDED, PANES, arm_of, winner_pane
from feedback.energy import cloud_energy, local_energy
from feedback.prompts import load_prompts
from feedback.style import reveals_origin, style_features

LOCAL_MODEL = "SmolLM2-135M-Instruct"
CLOUD_MODEL = "gpt-4.1-mini"
LOCAL_WATTS = 35.0  # the settings' default device power, for the demo's local energy


@functools.cache
def _cloud_wh_per_token() -> tuple[float, str]:
    """EcoLogits' energy per output token of the demo's cloud model, computed once (it is linear in tokens)."""
    estimate = cloud_energy(CLOUD_MODEL, 1000, 10.0)
    return estimate.wh / 1000, estimate.method


SHADOW_RATE = 0.1
BATCH = 5_000
# Demo events: code, name, region, city, time zone, live threshold (different thresholds make >2 arms)
EVENTS = (
    ("DEMO-SF", "Demo day San Francisco", "sf", "San Francisco", "America/Los_Angeles", 0.5),
    ("DEMO-EU", "Demo day Berlin", "europe", "Berlin", "Europe/Berlin", 0.55),
    ("DEMO-APAC", "Demo day Tokyo", "apac", "Tokyo", "Asia/Tokyo", 0.45),
)
# How much more (or less) the cloud answer tends to win per category; the effects sum to zero, so
# with categories drawn uniformly the overall win rate stays the requested one.
CATEGORY_EFFECT = {
    "math": 0.10,
    "coding": 0.08,
    "reasoning": 0.05,
    "extraction": 0.0,
    "stem": 0.0,
    "humanities": -0.05,
    "writing": -0.08,
    "roleplay": -0.10,
}
EXTRA_PROMPTS = {  # a few non-English prompts, so language segments exist in Europe and APAC
    "fr": ["Explique la différence entre une liste et un tuple en Python.", "Écris un haïku sur la mer."],
    "de": ["Erkläre kurz, wie ein Hash-Join funktioniert.", "Wie viele Primzahlen gibt es unter 50?"],
    "ja": ["東京でおすすめの観光地を三つ教えてください。", "二次方程式の解の公式を説明してください。"],
    "zh-cn": ["请解释什么是递归，并举一个例子。", "用三句话总结一下相对论。"],
}
REGION_LANGUAGES = {"sf": ("en",), "europe": ("en", "fr", "de"), "apac": ("en", "ja", "zh-cn")}
LIKE_TAGS = ("accurate", "clear", "concise", "helpful")
DISLIKE_TAGS = ("wrong", "too long", "off-topic", "vague", "repetitive")
COMMENT_THEMES = {
    "math": ["The local answer got the arithmetic wrong.", "Wrong result on the calculation, the other one was right."],
    "length": ["Way too long, I only needed one line.", "Too verbose, it repeats the question."],
    "code": ["The code does not run: missing import.", "Nice code example, it compiled first time."],
    "tone": ["Felt robotic and generic.", "Friendly and clear explanation, thanks!"],
    "pii": ["Contact me at jane.doe@example.com for a follow-up.", "My number is +1 415 555 0134, call me."],
}


PLANTED_JUDGE = "planted-judge"
BOT_TIME_TO_VOTE_MS = (300.0, 1500.0)  # planted bots vote this fast, always on the left pane, in long runs


@dataclass(frozen=True)
class Plant:
    """Effects of known size to plant, so the report's controls can be checked against the truth.

    Each is off at its default, and then the data are exactly as before (planting uses its own random
    stream). Where a preference is planted (length, speed, participant heterogeneity), the handoff arm's
    real advantage is the constant ``win_rate`` (logit scale), the same for every category and score.

    - ``length_preference``: voters' extra logit for an answer per unit of normalised token difference
      (own − other) / (own + other + 1); cloud answers are longer, so handoff looks better than it is.
    - ``bots``: share of participants that are bots: they always pick the left pane, 0.3–1.5 s after the
      answers complete, over 6–11 conversations.
    - ``latency_leak_ms``: extra mean duration of the handoff pane; 0 makes both panes' timing identically
      distributed (no leak). None keeps the default (the cloud answer takes ~1.2 s longer).
    - ``speed_preference``: voters' extra logit for the pane that finished first (live display only).
    - ``fair_share``: share of votes that saw the latency-fair display (panes released together).
    - ``heterogeneity``: standard deviation (logit) of each participant's own taste for the handoff arm.
    - ``origin_leak``: share of cloud answers that name their origin ("As ChatGPT by OpenAI").
    - ``duplicates``: share of conversations that repeat the participant's previous prompt, nearly verbatim.
    - ``judge_agreement``: write verdicts of a ``planted-judge`` (both orders) that agree with each decided
      human vote with this probability.
    """

    length_preference: float = 0.0
    bots: float = 0.0
    latency_leak_ms: float | None = None
    speed_preference: float = 0.0
    fair_share: float = 0.0
    heterogeneity: float = 0.0
    origin_leak: float = 0.0
    duplicates: float = 0.0
    judge_agreement: float | None = None

    @property
    def preference(self) -> bool:
        """Votes come from the planted model (constant real advantage plus planted preferences)."""
        return bool(self.length_preference or self.speed_preference or self.heterogeneity)


@dataclass
class _Ids:
    participant: int
    conversation: int
    turn: int
    answer: int
    decision: int
    vote: int
    rating: int


def _next_ids(connection: Connection) -> _Ids:
    def next_id(model: type) -> int:
        return (connection.scalar(select(func.max(model.id))) or 0) + 1

    return _Ids(*(next_id(m) for m in (Participant, Conversation, Turn, Answer, HandoffDecision, Vote, Rating)))


def _events(connection: Connection) -> list[tuple[int, str, float]]:
    out = []
    for code, name, region, city, timezone, threshold in EVENTS:
        event_id = connection.scalar(select(Event.id).where(Event.code == code))
        if event_id is None:
            event_id = connection.execute(
                insert(Event).returning(Event.id),
                {
                    "code": code,
                    "name": name,
                    "region": region,
                    "city": city,
                    "timezone": timezone,
                    "handoff_policy": "confidence",
                    "handoff_threshold": threshold,
                    "shadow_rate": SHADOW_RATE,
                    "cloud_spent": Decimal(0),
                    "currency": "USD",
                    "ui_language": "en",
                    "ask_profile": False,
                    "starts_on": dt.date(2026, 3, 1),
                    "ends_on": dt.date(2026, 3, 2),
                    "consent_text": "Your prompts, answers and votes are stored for research; no account, no name.",
                },
            ).scalar_one()
        out.append((event_id, region, threshold))
    return out


def _answer_text(rng: np.random.Generator, prompt: str, quality: str) -> str:
    topic = prompt.split(".")[0][:60]
    openings = {
        "good": ("Here is a clear answer.", "Short version:", "Step by step:"),
        "weak": ("I think", "It depends, but", "Possibly"),
    }[quality]
    return f"{rng.choice(openings)} {topic}: " + " ".join(
        rng.choice(["first", "then", "finally", "so", "because", "the result", "in short", "note"], size=12)
    )


class _Writer:
    """Buffers rows per table and flushes them with executemany inserts."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.rows: dict[type, list[dict]] = {}

    def add(self, model: type, row: dict) -> None:
        rows = self.rows.setdefault(model, [])
        rows.append(row)

    def flush(self) -> None:
        for model in (Participant, Conversation, Turn, HandoffDecision, Answer, Vote, Rating, JudgeVerdict):
            rows = self.rows.pop(model, None)
            if rows:
                self.connection.execute(insert(model), rows)


def generate(
    url: str,
    votes: int,
    seed: int,
    win_rate: float = 0.6,
    progress: Callable[[int], None] | None = None,
    plant: Plant | None = None,
) -> int:
    """Fill the (migrated) database with ``votes`` votes of demo data; returns the number written."""
    if not 0.0 <= win_rate <= 1.0:
        raise ValueError("--win-rate is a probability: give a number between 0 and 1.")
    plant = plant or Plant()
    for name in ("bots", "fair_share", "origin_leak", "duplicates"):
        if not 0.0 <= getattr(plant, name) <= 1.0:
            raise ValueError(f"--plant-{name.replace('_', '-')} is a share: give a number between 0 and 1.")
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 13])  # planted effects and new fields: the base data stay the same
    questions = load_prompts()
    categories = sorted(CATEGORY_EFFECT)
    engine = get_engine(url)
    start = dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC)
    written = 0
    with engine.begin() as connection:
        events = _events(connection)
        ids = _next_ids(connection)
        writer = _Writer(connection)
        pending = 0
        while written < votes:
            event_id, region, threshold = events[int(rng.integers(len(events)))]
            participant_id = ids.participant
            ids.participant += 1
            voter = _Voter(
                bot=bool(extra.random() < plant.bots),
                taste=float(extra.normal(0, plant.heterogeneity)) if plant.heterogeneity else 0.0,
            )
            last_prompt: str | None = None
            when = start + dt.timedelta(seconds=float(rng.uniform(0, 2 * 86400)))
            writer.add(
                Participant,
                {
                    "id": participant_id,
                    "event_id": event_id,
                    "pseudonym": f"demo-{seed}-{participant_id}",
                    "consented_at": when,
                    "ui_language": "en",
                    "profile": {"planted": "bot"} if voter.bot else None,  # the truth the bot flags are checked on
                    "created_at": when,
                },
            )
            conversations = int(rng.integers(1, 4))
            if voter.bot:
                conversations = int(extra.integers(6, 12))
            for _ in range(conversations):  # conversations per participant
                if written >= votes:
                    break
                conversation_id = ids.conversation
                ids.conversation += 1
                handoff_side = PANES[0] if rng.random() < 0.5 else PANES[1]
                category = categories[int(rng.integers(len(categories)))]
                candidates = [q for q in questions if q["category"] == category] or questions
                question = candidates[int(rng.integers(len(candidates)))]
                language = rng.choice(REGION_LANGUAGES[region])
                writer.add(
                    Conversation,
                    {
                        "id": conversation_id,
                        "event_id": event_id,
                        "participant_id": participant_id,
                        "handoff_side": handoff_side,
                        "category": category,
                        "created_at": when,
                    },
                )
                n_turns = min(int(rng.choice([1, 1, 1, 2, 2, 3])), votes - written)
                repeat = last_prompt is not None and extra.random() < plant.duplicates
                for index in range(n_turns):
                    when += dt.timedelta(seconds=float(rng.uniform(20, 120)))
                    prompt = _prompt(rng, question, index, language)
                    if repeat and index == 0:  # the same question again, as people retype it
                        prompt = last_prompt.rstrip("?.! ") + ("?" if extra.random() < 0.5 else " please")
                    last_prompt = prompt
                    context = _Context(
                        event_id, participant_id, conversation_id, handoff_side, category, threshold, voter
                    )
                    _turn(rng, writer, ids, context, index, prompt, language, win_rate, when, seed, extra, plant)
                    written += 1
                    pending += 1
            if pending >= BATCH:
                writer.flush()
                if progress is not None:
                    progress(pending)
                pending = 0
        writer.flush()
        if progress is not None and pending:
            progress(pending)
        # the events' budget ledger holds what their cloud calls cost, as reservations settle it live
        spent = (
            select(func.coalesce(func.sum(Answer.cost), 0))
            .join(Turn, Turn.id == Answer.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.event_id == Event.id, Answer.source == "cloud")
            .scalar_subquery()
        )
        connection.execute(update(Event).values(cloud_spent=spent))
        if engine.dialect.name == "postgresql":  # ids were assigned here: move the sequences past them
            for model in (Event, Participant, Conversation, Turn, Answer, HandoffDecision, Vote, Rating):
                table = model.__tablename__
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    )
                )
        rollups.rebuild(connection, [event_id for event_id, _, _ in events])  # bulk rows: recompute, set-based
    return written


def _prompt(rng: np.random.Generator, question: dict, index: int, language: str) -> str:
    if language != "en":
        options = EXTRA_PROMPTS[language]
        return options[(index + int(rng.integers(len(options)))) % len(options)]
    turns = question["turns"]
    return turns[min(index, len(turns) - 1)]


@dataclass(frozen=True)
class _Voter:
    bot: bool
    taste: float  # the participant's own logit offset for the handoff arm


@dataclass(frozen=True)
class _Context:
    event_id: int
    participant_id: int
    conversation_id: int
    handoff_side: str
    category: str
    threshold: float
    voter: _Voter


def _turn(
    rng: np.random.Generator,
    writer: _Writer,
    ids: _Ids,
    context: _Context,
    index: int,
    prompt: str,
    language: str,
    win_rate: float,
    when: dt.datetime,
    seed: int,
    extra: np.random.Generator,
    plant: Plant,
) -> None:
    """One turn with its decision, answers (plus a shadow answer on a random ε of kept-local turns), vote, ratings."""
    conversation_id, category, threshold = context.conversation_id, context.category, context.threshold
    handoff_side = context.handoff_side
    turn_id = ids.turn
    ids.turn += 1
    writer.add(
        Turn,
        {
            "id": turn_id,
            "conversation_id": conversation_id,
            "index": index,
            "prompt": prompt,
            "language": language,
            "category": category,
            "created_at": when,
        },
    )
    score = float(rng.random())
    router = float(np.clip(score + rng.normal(0, 0.25), 0, 1))
    handed_off = score >= threshold
    shadow = not handed_off and rng.random() < SHADOW_RATE
    tokens = int(rng.integers(20, 250))
    signals = {
        "tokens": float(tokens),
        "min_logprob": float(-12 * score - rng.random()),
        "p10_logprob": float(-6 * score),
        "mean_entropy": float(3 * score * rng.uniform(0.7, 1.0)),
        "max_entropy": float(6 * score * rng.uniform(0.7, 1.0)),
        "scores": {"confidence": score, "router": router, "always": 1.0, "never": 0.0},
    }
    writer.add(
        HandoffDecision,
        {
            "id": ids.decision,
            "turn_id": turn_id,
            "policy": "confidence",
            "policy_version": "1",
            "stage": "post",
            "threshold": threshold,
            "score": score,
            "handed_off": handed_off,
            "reason": "low confidence" if handed_off else None,
            "latency_ms": float(rng.uniform(0.05, 0.4)),
            "signals": signals,
            "shadow_propensity": None if handed_off else SHADOW_RATE,
            "created_at": when,
        },
    )
    ids.decision += 1
    local_latency = float(rng.gamma(4, 400))
    local_text = _answer_text(rng, prompt, "weak" if score > 0.5 else "good")
    cloud_text = _answer_text(rng, prompt, "good")
    local = {
        "turn_id": turn_id,
        "source": "local",
        "text": local_text,
        "model": LOCAL_MODEL,
        "dtype": "bfloat16",
        "tokens_in": len(prompt) // 4,
        "tokens_out": tokens,
        "ttft_ms": float(rng.gamma(2, 40)),
        "latency_ms": local_latency,
        "finish_reason": "stop",
        "retries": 0,
        "created_at": when,
        "base_url_host": None,
        "cost": None,
        "price_version": None,  # same keys in every row of a batch
        "energy_wh": local_energy(local_latency / 1000, LOCAL_WATTS).wh,
        "energy_method": f"measured time x {LOCAL_WATTS:g} W",
    }
    if extra.random() < plant.origin_leak:
        cloud_text = "As ChatGPT, a model by OpenAI: " + cloud_text
    if extra.random() < 0.5:  # cloud answers are often formatted
        cloud_text = f"## {prompt[:30]}\n- **{cloud_text[:20]}**\n- {cloud_text[20:]}"
    cloud_tokens = int(rng.integers(80, 400))
    cost = Decimal(cloud_tokens * 1.6 + len(prompt) // 4 * 0.4).scaleb(-6).quantize(Decimal("0.000001"))
    cloud = {
        "turn_id": turn_id,
        "source": "cloud",
        "text": cloud_text,
        "model": CLOUD_MODEL,
        "dtype": None,
        "base_url_host": "api.openai.com",
        "tokens_in": len(prompt) // 4,
        "tokens_out": cloud_tokens,
        "ttft_ms": float(rng.gamma(3, 150)),
        "latency_ms": local_latency + float(rng.gamma(4, 300)),
        "finish_reason": "stop",
        "retries": 0,
        "cost": cost,
        "price_version": "2026-01",
        "created_at": when,
        "energy_wh": _cloud_wh_per_token()[0] * cloud_tokens,
        "energy_method": _cloud_wh_per_token()[1],
    }
    if plant.latency_leak_ms is not None:  # timing drawn like the local answer's, plus the planted leak
        cloud["ttft_ms"] = float(extra.gamma(2, 40)) + plant.latency_leak_ms / 10
        cloud["latency_ms"] = float(extra.gamma(4, 400)) + plant.latency_leak_ms
    for row in (local, cloud):
        row["style"] = style_features(row["text"], row["tokens_out"])
        row["reveals_origin"] = reveals_origin(row["text"])
    for arm, row in (("off", local), ("on", cloud if handed_off else local)):
        writer.add(Answer, {**row, "id": ids.answer, "arm": arm})
        ids.answer += 1
    if shadow:
        writer.add(Answer, {**cloud, "id": ids.answer, "arm": "shadow"})
        ids.answer += 1
    display = "fair" if extra.random() < plant.fair_share else "live"
    winner_arm = _verdict(rng, handed_off, score, threshold, win_rate, category)
    if plant.preference and handed_off and winner_arm in DECIDED:
        on_first = cloud["latency_ms"] < local["latency_ms"]
        winner_arm = _planted_verdict(extra, win_rate, context.voter, plant, cloud, local, on_first, display)
    winner = winner_pane(winner_arm, handoff_side)
    time_to_vote = float(extra.lognormal(np.log(12_000), 0.5))
    if context.voter.bot:
        winner = PANES[0]
        winner_arm = arm_of(winner, handoff_side)  # as capture maps a pane, even on equal answers
        time_to_vote = float(extra.uniform(*BOT_TIME_TO_VOTE_MS))
    vote_id = ids.vote
    ids.vote += 1
    comment = None
    if rng.random() < 0.15:
        theme = list(COMMENT_THEMES)[int(rng.integers(len(COMMENT_THEMES)))]
        comment = str(rng.choice(COMMENT_THEMES[theme]))
    writer.add(
        Vote,
        {
            "id": vote_id,
            "idempotency_key": f"demo-{seed}-{vote_id}",
            "event_id": context.event_id,
            "conversation_id": conversation_id,
            "turn_id": turn_id,
            "participant_id": context.participant_id,
            "winner": winner,
            "winner_arm": winner_arm,
            "comment": comment,
            "final": False,
            "time_to_vote_ms": time_to_vote,
            "display": display,
            "created_at": when,
            "updated_at": when,
        },
    )
    if plant.judge_agreement is not None and handed_off and winner_arm in DECIDED:
        other = "off" if winner_arm == "on" else "on"
        verdict = winner_arm if extra.random() < plant.judge_agreement else other
        for order in ("on_first", "off_first"):
            writer.add(
                JudgeVerdict,
                {
                    "vote_id": vote_id,
                    "model": PLANTED_JUDGE,
                    "base_url_host": None,
                    "order": order,
                    "winner_arm": verdict,
                    "reply": f"[[{'A' if (verdict == 'on') == (order == 'on_first') else 'B'}]]",
                    "tokens_in": 400,
                    "tokens_out": 5,
                    "cost": Decimal("0.000650"),
                    "latency_ms": 300.0,
                    "created_at": when,
                },
            )
    for arm, stars in _stars(rng, winner_arm).items():
        tags = list(rng.choice(LIKE_TAGS if stars >= 4 else DISLIKE_TAGS, size=int(rng.integers(0, 3)), replace=False))
        writer.add(Rating, {"id": ids.rating, "vote_id": vote_id, "arm": arm, "stars": stars, "tags": tags or None})
        ids.rating += 1


def _verdict(
    rng: np.random.Generator, handed_off: bool, score: float, threshold: float, win_rate: float, category: str
) -> str:
    """Decided votes only where the panes differ; their mean win probability is ``win_rate``."""
    if not handed_off:
        return str(rng.choice(["identical", "tie", "both_bad"], p=[0.85, 0.1, 0.05]))
    roll = rng.random()
    if roll < 0.12:
        return "tie"
    if roll < 0.2:
        return "both_bad"
    # higher scores (less confident local answers) make the cloud win more often; the offset is
    # centred on the mean handed-off score, so the average stays win_rate
    half_range = (1 - threshold) / 2
    room = min(win_rate, 1 - win_rate)
    slope = min(1.0, room / half_range / 2) if half_range else 0.0
    effect = CATEGORY_EFFECT[category] if room >= 0.2 else 0.0
    p = win_rate + slope * (score - (1 + threshold) / 2) + effect
    return "on" if rng.random() < min(1.0, max(0.0, p)) else "off"


def _planted_verdict(
    rng: np.random.Generator,
    win_rate: float,
    voter: _Voter,
    plant: Plant,
    cloud: dict,
    local: dict,
    on_first: bool,
    display: str,
) -> str:
    """A decided verdict from the planted model: real advantage logit(win_rate), plus planted preferences."""
    p = min(max(win_rate, 1e-6), 1 - 1e-6)
    on_tokens, off_tokens = cloud["tokens_out"], local["tokens_out"]
    x = float(logit(p)) + voter.taste
    x += plant.length_preference * (on_tokens - off_tokens) / (on_tokens + off_tokens + 1)
    if display == "live":
        x += plant.speed_preference * (1 if on_first else -1)
    return "on" if rng.random() < expit(x) else "off"


def _stars(rng: np.random.Generator, winner_arm: str) -> dict[str, int]:
    if rng.random() < 0.4:  # many people don't rate
        return {}
    high, low = int(rng.integers(4, 6)), int(rng.integers(1, 4))
    if winner_arm == "on":
        return {"on": high, "off": low}
    if winner_arm == "off":
        return {"off": high, "on": low}
    if winner_arm == "identical":
        return {BOTH: int(rng.integers(2, 6))}
    if winner_arm == "both_bad":
        return {"on": int(rng.integers(1, 3)), "off": int(rng.integers(1, 3))}
    return {"on": high, "off": high}
