"""Prompt language, detected offline so APAC and European events are analysed by language.

Code, URLs and e-mail addresses are removed first: a French prompt that pastes Python is French,
not English. Text with too few letters to tell gets no language rather than a guess.
"""

from __future__ import annotations

import re

from langdetect import DetectorFactory, LangDetectException, detect

DetectorFactory.seed = 0  # langdetect is randomized; fixed seed makes it repeatable

_NOT_PROSE = re.compile(
    r"```.*?(```|$)"  # fenced code blocks (closed or not)
    r"|`[^`\n]*`"  # inline code
    r"|https?://\S+|www\.\S+"  # links
    r"|\S+@\S+\.\w+",  # e-mail addresses
    re.DOTALL,
)
MIN_LETTERS = 3


def prose(text: str) -> str:
    """The part of a prompt written in a human language."""
    return _NOT_PROSE.sub(" ", text)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code (``en``, ``ja``, ``fr``, ``zh-cn`` …) or None when there is too little text to tell."""
    words = prose(text)
    if sum(ch.isalpha() for ch in words) < MIN_LETTERS:
        return None
    try:
        return detect(words)
    except LangDetectException:
        return None
