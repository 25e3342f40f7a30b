"""Style features of an answer and whether it reveals its origin, computed once when it is stored.

The features are those of Chatbot Arena's style control (FastChat ``STYLE_CONTROL_ELEMENTS_V1``:
answer tokens, markdown headers, list items, bold spans) plus fenced code blocks; code is removed
before markdown is counted, as FastChat does, so a ``#`` comment in code is no header.
"""

from __future__ import annotations

import re

from feedback.stats import STYLE_FEATURES

_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
# Names that tell a voter which model or company wrote an answer (Arena drops such votes).
_ORIGIN = re.compile(
    r"\b(?:open\s?ai|chat\s?gpt|gpt-?[345](?:\.\d)?(?:-?o|-mini|-turbo)?|anthropic|claude|google|gemini|"
    r"deepmind|meta\s+ai|llama|mistral|mixtral|qwen|alibaba|deepseek|smollm|hugging\s?face|microsoft|phi-[234])\b",
    re.IGNORECASE,
)


def style_features(text: str, tokens: int | None = None) -> dict[str, int]:
    """Counts per ``STYLE_FEATURES``; ``tokens`` is the engine's count when known, else words."""
    prose = _CODE.sub("", text)
    features = {
        "tokens": int(tokens) if tokens is not None else len(text.split()),
        "headers": len(_HEADER.findall(prose)),
        "lists": len(_LIST.findall(prose)),
        "bold": len(_BOLD.findall(prose)),
        "code_blocks": len(_CODE.findall(text)),
    }
    assert tuple(features) == STYLE_FEATURES
    return features


def reveals_origin(text: str) -> bool:
    """True when the answer names a model or AI company, so a voter could tell the arms apart."""
    return _ORIGIN.search(text) is not None
