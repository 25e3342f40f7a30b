"""PII redaction for text that leaves the database (exports, report examples, comment themes).

Patterns, not a model: emails, phone numbers, IP addresses, credit-card-like numbers (Luhn-checked),
API-key-like tokens and URLs with credentials become ``[EMAIL]``, ``[PHONE]`` … so a reader still sees
that something was there. Order matters: URLs with credentials before emails, cards before phones.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

KINDS = ("url_credentials", "api_key", "email", "credit_card", "ip_address", "phone")

_URL_CREDENTIALS = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]+:[^\s/@]+@[^\s]+")
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{16,}"  # OpenAI
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|xox[abprs]-[A-Za-z0-9-]{10,}"  # AWS, Google, Slack
    r"|hf_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{20,}|sk_(?:live|test)_[A-Za-z0-9]{16,})"  # HF, GitLab, Stripe
    r"|(?i:bearer\s+)[A-Za-z0-9._~+/-]{20,}=*"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a bare JWT: header.payload.signature
    # name = value, the name alone or inside an environment variable (OPENAI_API_KEY=, AWS_SECRET_ACCESS_KEY:)
    r"|(?i:\b(?:[A-Za-z0-9]+_)*(?:api[_-]?key|secret|token|password|passwd)(?:_[A-Za-z0-9]+)*\b\s*[:=]\s*)"
    r"['\"]?[^\s'\"]{6,}"
)
# Unicode letters on both sides (josé@correo.es, 用户@例子.公司): \w is Unicode-aware for str patterns
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{6,}\d(?![\w])")


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, char in enumerate(digits):
        d = int(char)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    return "[CREDIT_CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else None


def _ip(match: re.Match[str]) -> str | None:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return None
    return "[IP_ADDRESS]"


def _phone(match: re.Match[str]) -> str | None:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    # 9–15 digits (E.164 max 15) with phone-like punctuation or a leading +; bare years/ids stay
    if not 9 <= len(digits) <= 15 or not (text.startswith("+") or re.search(r"[ ().-]", text)):
        return None
    return "[PHONE]"


# Cheap necessary conditions, one per rule, checked on the text as it is when the rule's turn comes:
# a rule whose condition fails cannot change the text, so most texts skip the full patterns.
_DIGIT = re.compile(r"\d")
# sk- sk_ secret gh?_ github_pat_ glpat- akia aiza api xox hf_ bearer token passw, grouped by first letter (faster)
_API_KEY_HINT_LOWER = re.compile(
    r"s(?:k[-_]|ecret)|g(?:h[pousr]_|ithub_pat_|lpat-)|a(?:kia|iza|pi)|xox|hf_|bearer|token|passw|eyj"
)
# non-ASCII text: IGNORECASE also folds e.g. "ı" to "i" and "ſ" to "s", which str.lower() does not
_API_KEY_HINT = re.compile(_API_KEY_HINT_LOWER.pattern, re.IGNORECASE)
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{1,4}:")  # two colons with at most four hex digits between


def _digits(at_least: int) -> Callable[[str], bool]:
    """Whether the text holds that many digits: a card is replaced from 13, a phone from 9, an IPv4 from 4."""
    enough = re.compile(r"(?:\D*\d)" + f"{{{at_least}}}")
    return lambda text: _DIGIT.search(text) is not None and enough.match(text) is not None


def _may_hold_api_key(text: str) -> bool:
    if not text.isascii():
        return _API_KEY_HINT.search(text) is not None
    return _API_KEY_HINT_LOWER.search(text.lower()) is not None


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None], Callable[[str], bool]], ...] = (
    ("url_credentials", _URL_CREDENTIALS, lambda m: "[URL_WITH_CREDENTIALS]", lambda t: "://" in t and "@" in t),
    ("api_key", _API_KEY, lambda m: "[API_KEY]", _may_hold_api_key),
    ("email", _EMAIL, lambda m: "[EMAIL]", lambda t: "@" in t),
    ("credit_card", _CARD, _card, _digits(13)),
    ("ip_address", _IPV4, _ip, lambda t, four=_digits(4): "." in t and four(t)),
    ("ip_address", _IPV6, _ip, lambda t: "::" in t or _IPV6_HINT.search(t) is not None),
    ("phone", _PHONE, _phone, _digits(9)),
)


def redact(text: str, counts: Counter[str] | None = None) -> str:
    """Replace PII-like spans with a ``[KIND]`` marker; ``counts`` (if given) tallies each kind."""
    for kind, pattern, replace, hint in _RULES:
        if not hint(text):
            continue

        def _sub(match: re.Match[str], kind: str = kind, replace=replace) -> str:  # noqa: ANN001
            replacement = replace(match)
            if replacement is None:
                return match.group()
            if counts is not None:
                counts[kind] += 1
            return replacement

        text = pattern.sub(_sub, text)
    return text


# One RE2 pattern (pyarrow) that matches every text any rule's hint above could let through, so a batch
# of texts is screened in C++ and only the matches go through ``redact``: a text that no hint lets
# through leaves ``redact`` unchanged. It is a superset by construction, never a rule of its own:
# - digits: card, IPv4 and phone need 4+ of Python's Unicode ``\d`` (category Nd, ``\p{Nd}`` in RE2);
# - "@" (emails, URLs with credentials), "::" or ":hex:" (IPv6), exactly as the hints above;
# - the API-key hint, case-insensitive, with the extra letters Python's IGNORECASE folds onto ASCII
#   ones (dotless ı and dotted İ onto i; RE2's own (?i) already folds ſ onto s and the Kelvin sign onto k).
# tests/test_export_redaction.py checks the superset over every code point.
_HINT_LETTERS = {"i": "[iIıİ]"}
SCREEN = (
    r"\p{Nd}(?s:.*)\p{Nd}(?s:.*)\p{Nd}(?s:.*)\p{Nd}|@|::|:[0-9A-Fa-f]{1,4}:|(?i:"
    + "".join(_HINT_LETTERS.get(char, char) for char in _API_KEY_HINT_LOWER.pattern)
    + ")"
)


def screen(texts: list[str]) -> list[bool]:
    """Per text, whether ``redact`` might change it (``SCREEN``, one RE2 pass over the batch in C++)."""
    if not texts:
        return []
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.match_substring_regex(pa.array(texts, type=pa.large_string()), SCREEN).to_pylist()


def redact_many(texts: list[str], counts: Counter[str] | None = None) -> list[str]:
    """``redact`` over a batch, the same result text by text: texts the screen rules out are kept as they are."""
    return [redact(text, counts) if hit else text for text, hit in zip(texts, screen(texts), strict=True)]
