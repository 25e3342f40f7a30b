"""Every attendee-facing string, in one catalog per interface language (English, Japanese, French).

Catalogs are TOML files in ``playground/locales/`` with the same keys in every language; a key
missing in one language falls back to English so a half-translated catalog never breaks a page.
Plain Python (no Streamlit), so services can name their messages by key too.
"""

from __future__ import annotations

import string
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
LANGUAGES = {"en": "English", "ja": "日本語", "fr": "Français"}
DEFAULT_LANGUAGE = "en"


class KeyedMessage(Protocol):
    """What ``feedback`` and ``db`` errors a person may see carry instead of a translated text."""

    key: str
    params: dict[str, Any]


class UnknownMessage(KeyError):
    """A page asked for a key that no catalog has: a programming error, caught by the catalog tests."""


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@lru_cache(maxsize=len(LANGUAGES))
def catalog(language: str) -> dict[str, Any]:
    """The flattened catalog (``"feedback.save": "Save feedback"``) of one interface language."""
    with (LOCALES_DIR / f"{language}.toml").open("rb") as file:
        return _flatten(tomllib.load(file))


def supported(language: str | None) -> str:
    """The language itself when shipped, else the default: events and browsers may name others."""
    if language and language.split("-")[0].lower() in LANGUAGES:
        return language.split("-")[0].lower()
    return DEFAULT_LANGUAGE


def lookup(language: str, key: str) -> Any:
    """A raw catalog value (a string or a list of strings), falling back to English."""
    for name in (supported(language), DEFAULT_LANGUAGE):
        value = catalog(name).get(key)
        if value is not None:
            return value
    raise UnknownMessage(key)


def translate(language: str, key: str, /, **params: Any) -> str:
    """The message ``key`` in ``language``, with ``{placeholders}`` filled from ``params``."""
    return str(lookup(language, key)).format(**params)


def placeholders(message: str) -> set[str]:
    """Names a message expects, so tests can check every language asks for the same ones."""
    return {name.split(".")[0] for _, name, _, _ in string.Formatter().parse(message) if name}


class Translator:
    """``t("feedback.save")`` bound to one interface language: what a page calls."""

    def __init__(self, language: str | None) -> None:
        self.language = supported(language)

    def __call__(self, key: str, /, **params: Any) -> str:
        return translate(self.language, key, **params)

    def list(self, key: str) -> list[str]:
        return list(lookup(self.language, key))

    def error(self, error: KeyedMessage) -> str:
        """The message of an error raised below the pages, which names its message by key."""
        return self(error.key, **error.params)

    def label(self, prefix: str, name: str) -> str:
        """A label for an organizer-defined name (a tag): its translation when the catalog has one."""
        try:
            return self(f"{prefix}.{name}")
        except UnknownMessage:
            return name
