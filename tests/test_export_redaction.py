"""PII samples are redacted; ordinary numbers and text are left alone."""

from __future__ import annotations

from collections import Counter

import pytest

from feedback.redaction import redact


@pytest.mark.parametrize(
    ("text", "marker"),
    [
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
    ],
)
def test_pii_sample_is_replaced_by_a_marker(text: str, marker: str) -> None:
    counts: Counter[str] = Counter()
    out = redact(text, counts)
    assert marker in out and sum(counts.values()) >= 1
    for secret in ("abcdefgh1234", "wJalrXUtnFEMI", "eyJzdWIi", "josé", "garcía", "用户"):
        assert secret not in out


@pytest.mark.parametrize(
    "text",
    [
        "In 1969, 3 astronauts flew 384400 km.",
        "Version 2.13.0 of torch, step 0.5, pi is 3.14159",
        "A card-like number that fails Luhn: 4111 1111 1111 1112",
        "See https://example.com/docs?page=2 for more",
        "The model used 1200 tokens: 800 in, 400 out; tokens: 123456 in total.",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text
