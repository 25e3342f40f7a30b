"""PII samples are redacted; ordinary numbers and text are left alone."""

from __future__ import annotations

from collections import Counter

import pytest

from feedback.redaction import _API_KEY_HINT_LOWER, _HINT_LETTERS, redact, redact_many

PII_SAMPLES = [
    ("write to jane.doe+events@example.co.uk today", "[EMAIL]"),
    ("call me on +44 20 7946 0958", "[PHONE]"),
    ("or (415) 555-0134 after six", "[PHONE]"),
    ("the box is at 10.0.0.17", "[IP_ADDRESS]"),
    ("v6 address 2001:db8:85a3::8a2e:370:7334 works", "[IP_ADDRESS]"),
    ("card 5555-5555-5555-4444 exp 12/29", "[CREDIT_CARD]"),
    ("OPENAI_API_KEY sk-abc123def456ghi789jkl012mno", "[API_KEY]"),
    ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "[API_KEY]"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "[API_KEY]"),
    ("password = correct-horse-battery", "[API_KEY]"),
    ("clone https://deploy:s3cr3t@git.example.com/repo.git", "[URL_WITH_CREDENTIALS]"),
    ("export OPENAI_API_KEY=abcdefgh1234", "[API_KEY]"),
    ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG", "[API_KEY]"),
    ("session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc pasted", "[API_KEY]"),
    ("écrivez à josé.garcía@correo.es", "[EMAIL]"),
    ("連絡先 用户@例子.公司 まで", "[EMAIL]"),
]
ORDINARY = [
    "In 1969, 3 astronauts flew 384400 km.",
    "Version 2.13.0 of torch, step 0.5, pi is 3.14159",
    "A card-like number that fails Luhn: 4111 1111 1111 1112",
    "See https://example.com/docs?page=2 for more",
    "The model used 1200 tokens: 800 in, 400 out; tokens: 123456 in total.",
]


@pytest.mark.parametrize(("text", "marker"), PII_SAMPLES)
def test_pii_sample_is_replaced_by_a_marker(text: str, marker: str) -> None:
    counts: Counter[str] = Counter()
    out = redact(text, counts)
    assert marker in out and sum(counts.values()) >= 1
    for secret in ("abcdefgh1234", "wJalrXUtnFEMI", "eyJzdWIi", "josé", "garcía", "用户"):
        assert secret not in out


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_batch_redaction_equals_redact_text_by_text() -> None:
    """The RE2 screen only skips texts ``redact`` leaves alone: same texts out, same counts."""
    texts = [text for text, _ in PII_SAMPLES] + ORDINARY
    texts += [
        "call +٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨ (Arabic-Indic digits)",
        "box at １０.０.０.１７ in full-width digits",
        "ſecret = hunter2hunter",  # long s: IGNORECASE folds it onto s
        "apı_key = abcdefgh12",  # dotless i
        "AKIA" + "İ" * 3 + " TOKEN: ABCDEFGHIJ",
        "Ünïcödé text with no PII at all",
        "a:b:c and ::1 and fe80::1",
        "",
    ]
    expected: Counter[str] = Counter()
    one_by_one = [redact(text, expected) for text in texts]
    counts: Counter[str] = Counter()
    assert redact_many(texts, counts) == one_by_one
    assert counts == expected


def test_screen_is_a_superset_of_every_hint_over_every_code_point() -> None:
    """Each character Python's ``\\d`` or IGNORECASE hint letters accept, the RE2 screen accepts too."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    array = pa.array(chars, type=pa.large_string())
    digit = re.compile(r"\d")
    python_digits = {c for c in chars if digit.fullmatch(c)}
    screened = pc.match_substring_regex(array, r"^\p{Nd}$").to_pylist()
    assert python_digits <= {c for c, hit in zip(chars, screened, strict=True) if hit}
    letters = sorted({c for c in _API_KEY_HINT_LOWER.pattern if c.isalpha()})
    any_letter = re.compile("[" + "".join(letters) + "]", re.IGNORECASE)
    candidates = [c for c in chars if any_letter.fullmatch(c)]  # the only characters any hint letter folds from
    for letter in letters:
        python = {c for c in candidates if re.fullmatch(letter, c, re.IGNORECASE)}
        rendered = _HINT_LETTERS.get(letter, letter)  # as the screen writes the letter
        re2 = pc.match_substring_regex(pa.array(sorted(python), type=pa.large_string()), f"^(?i:{rendered})$")
        assert all(re2.to_pylist()), (letter, python)
