"""Prompt language, detected offline so APAC and European events are analysed by language."""

from __future__ import annotations

from langdetect import DetectorFactory, LangDetectException, detect

DetectorFactory.seed = 0  # langdetect is randomized; fixed seed makes it repeatable


def detect_language(text: str) -> str | None:
    """ISO 639-1 code (``en``, ``ja``, ``fr``, ``zh-cn`` …) or None when the text has no letters."""
    try:
        return detect(text)
    except LangDetectException:
        return None
