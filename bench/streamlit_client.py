"""A Streamlit page driven over its own websocket, as a browser drives it, without drawing anything.

The app benchmark's attendees (``bench/hall_app.py``). A browser on the server's own two cores measures
the browser: 8 Chromium pages took 1.4 of the 2 cores in session 10, and at an event the browsers run on
the attendees' phones. This client speaks the same protocol as Streamlit's frontend (``BackMsg`` rerun
requests carrying widget states, ``ForwardMsg`` deltas back, from ``streamlit.proto``), so the server
does all it does for a browser: runs the page script, serialises every delta and sends it. What it
keeps of the page is what the benchmark reads: the widgets' ids by key, and the text of the markdown
inside each assistant chat message (the answer panes), with when it first changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import ChatInputValue
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect


@dataclass
class Widget:
    """A widget the page drew in its latest run: the id its state is sent under, and whether it takes input."""

    id: str
    disabled: bool


@dataclass
class Page:
    """What the benchmark reads off the page, kept up to date from the deltas as they arrive."""

    widgets: dict[str, Widget] = field(default_factory=dict)  # by user key
    panes: dict[tuple[int, ...], str] = field(default_factory=dict)  # assistant answers' markdown, by delta path
    pane_changes: int = 0  # pane text changes sent, as a browser would redraw them
    first_text_at: float | None = None  # wall clock (time.time) of the first pane text but the placeholder
    first_text: str | None = None
    runs_finished: int = 0
    _assistant_blocks: set[tuple[int, ...]] = field(default_factory=set)


class StreamlitPage:
    """One attendee's page: ``await StreamlitPage.open(url)``, then ``click`` / ``send`` and ``wait_for``."""

    def __init__(self, socket: ClientConnection, query_string: str, placeholder: str) -> None:
        self._socket = socket
        self._query_string = query_string
        self._placeholder = placeholder
        self.page = Page()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, placeholder: str = "") -> StreamlitPage:
        """Connect to the app at ``url`` (with its query string) and run the page once, as loading it does (the
        page may go on to rerun itself: wait for what the next step needs). ``placeholder``: a pane's text before
        its first token, as the reader sees it (the markdown's emphasis marks aside)."""
        parts = urlsplit(url)
        socket = await connect(
            f"ws://{parts.netloc}{parts.path.rstrip('/')}/_stcore/stream",
            subprotocols=["streamlit"],  # type: ignore[list-item]
            max_size=None,
            ping_interval=None,
        )
        page = cls(socket, parts.query, placeholder)
        await page._rerun([])
        await page.wait_for(lambda p: p.runs_finished >= 1)
        return page

    async def close(self) -> None:
        self._reader.cancel()
        await self._socket.close()

    async def click(self, key: str) -> None:
        """Click the button with this key (a trigger, as the browser sends it)."""
        await self._rerun([WidgetState(id=self._widget(key).id, trigger_value=True)])

    async def send(self, key: str, text: str) -> None:
        """Type ``text`` into the chat input with this key and press Enter."""
        await self._rerun([WidgetState(id=self._widget(key).id, chat_input_value=ChatInputValue(data=text))])

    async def wait_for(self, done: Callable[[Page], bool], timeout: float = 600.0) -> None:
        """Until ``done(page)`` holds, checked after every message from the server."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self._reader.done() or done(self.page)), timeout)
        if self._reader.done() and not done(self.page):
            raise ConnectionError(f"the app closed the page's connection: {self._reader.exception()!r}")

    def _widget(self, key: str) -> Widget:
        if key not in self.page.widgets:
            raise KeyError(f"the page drew no widget with key {key!r} (it drew {sorted(self.page.widgets)})")
        return self.page.widgets[key]

    async def _rerun(self, widgets: list[WidgetState]) -> None:
        state = ClientState(query_string=self._query_string)
        state.widget_states.widgets.extend(widgets)
        message = BackMsg()
        message.rerun_script.CopyFrom(state)
        await self._socket.send(message.SerializeToString())

    async def _read(self) -> None:
        try:
            async for data in self._socket:
                message = ForwardMsg()
                message.ParseFromString(data)
                self._apply(message)
                async with self._changed:
                    self._changed.notify_all()
        finally:  # a closed connection wakes the waiters, who then say so
            async with self._changed:
                self._changed.notify_all()

    def _apply(self, message: ForwardMsg) -> None:
        kind, page = message.WhichOneof("type"), self.page
        if kind == "new_session":  # a script run starts: paths are given out afresh
            page._assistant_blocks.clear()
            page.panes.clear()
        elif kind == "script_finished":
            page.runs_finished += 1
        elif kind == "delta":
            path, delta = tuple(message.metadata.delta_path), message.delta
            change = delta.WhichOneof("type")
            if change == "add_block":
                block = delta.add_block
                if block.WhichOneof("type") == "chat_message" and block.chat_message.name == "assistant":
                    page._assistant_blocks.add(path)
            elif change == "new_element":
                self._element(path, delta.new_element)

    def _element(self, path: tuple[int, ...], element) -> None:  # noqa: ANN001 - streamlit.proto Element
        kind, page = element.WhichOneof("type"), self.page
        widget = getattr(element, kind, None) if kind else None
        widget_id = getattr(widget, "id", "") if widget is not None else ""
        if widget_id.startswith("$$ID-"):  # "$$ID-<hash>-<user key>"
            key = widget_id.split("-", 2)[2]
            page.widgets[key] = Widget(widget_id, bool(getattr(widget, "disabled", False)))
        if kind == "markdown" and any(path[:n] in page._assistant_blocks for n in range(1, len(path))):
            text = element.markdown.body
            if page.panes.get(path) != text:
                page.panes[path] = text
                page.pane_changes += 1
                if page.first_text_at is None and text.strip("_*") not in ("", self._placeholder):
                    page.first_text_at, page.first_text = time.time(), text
