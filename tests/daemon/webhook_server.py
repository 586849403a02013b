"""A local webhook receiver for the alert tests: a stdlib HTTP server on 127.0.0.1 (random
port) in a thread that records every POST and answers with scripted status codes."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class WebhookServer:
    """Answers each POST with the next code of ``statuses``, then ``default``. While
    ``hold`` is cleared, requests are received (and recorded) but not answered."""

    statuses: deque[int] = field(default_factory=deque)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    def __post_init__(self) -> None:
        self.hold.set()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout_s: float = 30.0) -> bool:
        """Wait until ``n`` requests were received."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= n, timeout_s)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.received]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server._cond:
                    status = server.statuses.popleft() if server.statuses else server.default
                    server.received.append(
                        Received(self.path, dict(self.headers), json.loads(raw or b"null"), status)
                    )
                    server._cond.notify_all()
                server.hold.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def webhook_server(statuses: list[int] | None = None, default: int = 200) -> Iterator[WebhookServer]:
    """Run a :class:`WebhookServer` for the duration of the block."""
    hook = WebhookServer(deque(statuses or []), default)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), hook._handler())
    httpd.daemon_threads = True
    hook.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.hold.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
