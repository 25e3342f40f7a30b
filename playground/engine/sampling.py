"""Choosing the next token from last-row logits, the same way in every in-process engine.

Greedy at temperature 0, else per-request temperature and nucleus (top-p) sampling with the
request's own seeded generator. Before choosing, two penalties keep a small model from looping
(``Decoding``): a repetition penalty on the tokens the answer already holds (CTRL's rule: a
positive logit is divided by it, a negative one multiplied) and a ban on any token that would
repeat an n-gram of the answer (``no_repeat_ngram_size``). Both look at the answer's own tokens
only, not the prompt: the prompt holds the chat template's end-of-turn token, and penalising it
would keep the model from stopping.

The log-prob of the chosen token and the entropy of the distribution (nats, at temperature 1) are
read from the model's raw logits, before any penalty: what the handoff policies score is the
model's own confidence, the same figure a server reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from playground.settings import Settings


@dataclass(frozen=True)
class Decoding:
    """How one answer is decoded: what the engine applies, and what is stored with the answer."""

    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float = 1.0  # 1.0: off
    no_repeat_ngram_size: int = 0  # 0: off

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Decoding:
        """The configured defaults, with any per-call value that is not None instead."""
        values = {
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "repetition_penalty": settings.repetition_penalty,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def record(self, **unsupported: bool) -> dict[str, Any]:
        """The parameters as stored with an answer; one the engine cannot apply is stored as None."""
        values = asdict(self)
        for name, dropped in unsupported.items():
            if dropped:
                values[name] = None
        return values


def nucleus(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per-row temperature and top-p: the smallest set of tokens whose probability reaches top_p."""
    probs = torch.softmax(logits / temperature[:, None], dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p[:, None]
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def banned_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in ``tokens`` (each n-gram once per answer)."""
    if n <= 0 or len(tokens) < n:
        return []
    if n == 1:
        return sorted(set(tokens))
    prefix = tokens[len(tokens) - n + 1 :]
    return sorted(
        {tokens[start + n - 1] for start in range(len(tokens) - n + 1) if tokens[start : start + n - 1] == prefix}
    )


def penalize(logits: torch.Tensor, histories: list[list[int]], decodings: list[Decoding]) -> torch.Tensor:
    """The logits with each row's repetition penalty and n-gram ban applied over its own answer so far.

    A copy when anything changes; the input is left as the model gave it.
    """
    out = logits
    for i, (tokens, decoding) in enumerate(zip(histories, decodings, strict=True)):
        if not tokens:
            continue
        penalty, n = decoding.repetition_penalty, decoding.no_repeat_ngram_size
        if penalty != 1.0:
            out = out.clone() if out is logits else out
            index = torch.tensor(sorted(set(tokens)), device=out.device)
            row = out[i, index]
            out[i, index] = torch.where(row > 0, row / penalty, row * penalty)
        banned = banned_tokens(tokens, n)
        if banned and len(banned) < out.shape[-1]:
            out = out.clone() if out is logits else out
            out[i, torch.tensor(banned, device=out.device)] = float("-inf")
    return out


def choose_tokens(
    logits: torch.Tensor,
    decodings: list[Decoding],
    generators: list[torch.Generator | None],
    histories: list[list[int]] | None = None,
) -> tuple[list[int], list[float], list[float]]:
    """One token per row of ``logits``: (tokens, their log-probs, the rows' entropies).

    ``histories`` are the rows' answer tokens so far (for the penalties). A row with no generator is
    decoded greedily (its temperature is 0). Log-probs and entropies are the raw model's.
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    entropies = (-(logp.exp() * logp).sum(-1)).tolist()
    scored = penalize(logits, histories, decodings) if histories is not None else logits
    tokens = torch.argmax(scored, dim=-1)
    sampled = [i for i, generator in enumerate(generators) if generator is not None]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        probs = nucleus(
            scored[index],
            torch.tensor([decodings[i].temperature for i in sampled], device=logits.device),
            torch.tensor([decodings[i].top_p for i in sampled], device=logits.device),
        )
        for j, i in enumerate(sampled):
            tokens[i] = torch.multinomial(probs[j].cpu(), 1, generator=generators[i])[0]
    chosen = logp.gather(1, tokens[:, None])[:, 0].tolist()
    return tokens.tolist(), chosen, entropies


def seeded_generator(temperature: float, seed: int | None) -> torch.Generator | None:
    """The request's own random stream (None for greedy decoding)."""
    if temperature <= 0:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else torch.seed())
    return generator
