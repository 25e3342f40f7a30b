"""Choosing the next token from last-row logits, the same way in every in-process engine.

Greedy at temperature 0, else per-request temperature and nucleus (top-p) sampling with the
request's own seeded generator; the log-prob of the chosen token and the entropy of the full
distribution (nats, at temperature 1) are what the handoff policies score.
"""

from __future__ import annotations

import torch


def nucleus(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per-row temperature and top-p: the smallest set of tokens whose probability reaches top_p."""
    probs = torch.softmax(logits / temperature[:, None], dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p[:, None]
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def choose_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator | None],
) -> tuple[list[int], list[float], list[float]]:
    """One token per row of ``logits``: (tokens, their log-probs, the rows' entropies).

    A row with no generator is decoded greedily (its temperature is 0).
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    entropies = (-(logp.exp() * logp).sum(-1)).tolist()
    tokens = torch.argmax(logits, dim=-1)
    sampled = [i for i, generator in enumerate(generators) if generator is not None]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        probs = nucleus(
            logits[index],
            torch.tensor([temperatures[i] for i in sampled], device=logits.device),
            torch.tensor([top_ps[i] for i in sampled], device=logits.device),
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
