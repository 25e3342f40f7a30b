"""A real HTTP proxy on 127.0.0.1 in front of the cloud stand-in that injects cloud failures.

Tests point ``cloud_base_url`` at it and queue faults; each request takes the next queued fault
(then ``default``). Faults: ``pass`` (forward to the stand-in, streaming), ``timeout`` (accept and
never answer), ``429``, ``500``, ``503``, ``malformed`` (200 with a broken event stream), ``html``
(200 with an HTML page) and ``drop`` (stream a little of the real answer, then cut the
connection). "Connection refused" needs no proxy: point the client at a port nobody listens on;
a proxy started later on that ``port`` is the server coming back. ``retry_after`` (a header value)
goes on every 429 and 503 while it is set. ``bodies`` keeps every request body, in order, so a test
can read what the client really sent. ``hold()`` keeps every ``pass`` request waiting (a cloud that
has not answered yet) until ``let_go()``, so a test can keep turns running as long as it needs.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT_DELTA = re.compile(rb'"content":\s*"[^"]')
FAULTS = ("pass", "timeout", "429", "500", "503", "malformed", "html", "drop")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, default: str = "pass", port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.default = default
        self.retry_after: str | None = None
        self.queue: deque[str] = deque()
        self.seen: list[str] = []  # the fault applied to each request, in order
        self.seen_at: list[float] = []  # time.monotonic() of each request
        self.bodies: list[bytes] = []  # each POST body as received
        self.lock = threading.Lock()
        self._release = threading.Event()
        self._gate = threading.Event()  # set: ``pass`` forwards at once; cleared by hold()
        self._gate.set()
        self._connections: set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy._connections.add(self.connection)

            def do_GET(self) -> None:
                proxy._forward(self, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy._handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Gone like a dead server: the listener and every open (keep-alive) connection close."""
        self._release.set()
        self._gate.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def inject(self, *faults: str) -> FaultProxy:
        for fault in faults:
            assert fault in FAULTS, fault
        with self.lock:
            self.queue.extend(faults)
        return self

    def hold(self) -> FaultProxy:
        """From now on ``pass`` requests wait (unanswered, the connection open) until ``let_go()``."""
        self._gate.clear()
        return self

    def let_go(self) -> None:
        """Forward every held request, and the next ones at once."""
        self._gate.set()

    def _next(self) -> str:
        with self.lock:
            fault = self.queue.popleft() if self.queue else self.default
            self.seen.append(fault)
            self.seen_at.append(time.monotonic())
            return fault

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.bodies.append(body)
        fault = self._next()
        if fault == "pass":
            self._gate.wait(600)
            self._forward(handler, body)
        elif fault == "timeout":
            self._release.wait(60)  # the client's timeout fires first
        elif fault in ("429", "500", "503"):
            payload = b'{"error": {"message": "injected failure", "type": "injected"}}'
            handler.send_response(int(fault))
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            if self.retry_after is not None and fault in ("429", "503"):
                handler.send_header("Retry-After", self.retry_after)
            handler.end_headers()
            handler.wfile.write(payload)
        elif fault == "malformed":
            payload = b'data: {"id": "x", "choices": [{"delta": {"content": "Hel\n\ndata: [DONE]\n\n'
            self._send_stream(handler, payload)
        elif fault == "html":
            payload = b"<html><body>502 Bad Gateway from a captive portal</body></html>"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        elif fault == "drop":
            self._forward(handler, body, cut_after=1)

    @staticmethod
    def _send_stream(handler: BaseHTTPRequestHandler, payload: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes, cut_after: int | None = None) -> None:
        """Forward to the stand-in, streaming the answer back chunk by chunk."""
        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        headers["Content-Length"] = str(len(body))
        upstream.request(handler.command, handler.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                handler.send_header(key, value)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        while chunk := response.read1(65536):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
            sent += 1
            if cut_after is not None and sent >= cut_after and TEXT_DELTA.search(chunk):
                time.sleep(0.05)
                handler.close_connection = True
                handler.connection.shutdown(2)  # mid-stream cut: no terminating chunk
                upstream.close()
                return
        handler.wfile.write(b"0\r\n\r\n")
        upstream.close()
