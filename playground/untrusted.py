"""Showing text we don't control: attendee prompts, comments and tags, event fields, model output.

Two rules, one home, for every page:

- ``inert(text)``: markdown source that displays ``text`` literally, for every place that is not an
  answer (and for widget labels and options, which Streamlit renders as markdown too). No link, image,
  heading, list, emphasis, colour, icon, emoji code, maths or HTML can come out of it.
- ``answer_markdown(text)``: an answer keeps its markdown (code, lists, tables, links a person may
  click), but never makes the browser fetch a remote image: a prompt-injected answer could otherwise
  send the conversation to someone else's server in an image URL, with nobody clicking anything.

Both return markdown strings, so they fit ``st.markdown``, ``st.error``, ``st.caption``, placeholders,
labels and ``format_func`` alike.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character: CommonMark lets each be backslash-escaped, and every markdown
# construct (GFM autolinks, Streamlit's ``:colour[...]`` and ``:material/...:`` directives, ``$`` maths
# included) needs at least one of them unescaped.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NBSP = "&nbsp;"  # an entity: decoded after parsing, so neither trimmed nor read as indentation


def inert(text: str) -> str:
    """Markdown that shows ``text`` as it is, line breaks and leading indentation included."""
    lines = []
    for line in _LINE_BREAK.split(text):
        body = line.lstrip(" \t")
        indent = line[: len(line) - len(body)].replace("\t", "    ").replace(" ", _NBSP)  # not a code block
        lines.append(indent + _PUNCTUATION.sub(r"\\\1", body))
    return "  \n".join(lines)  # two trailing spaces: a hard line break inside one paragraph


def answer_markdown(text: str) -> str:
    """The answer's markdown with every image turned into literal text, so nothing is fetched.

    An image needs a literal ``![`` and either an inline destination (``](``) or a reference
    definition (``]:``); when both can occur, every ``![`` is escaped. This is decided on the text,
    not by a parser that might disagree with the browser's, at the cost of a visible backslash in
    code such as Rust's ``vec![`` when the same answer also has a link.
    """
    if "![" in text and ("](" in text or "]:" in text):
        return text.replace("![", "!\\[")
    return text
