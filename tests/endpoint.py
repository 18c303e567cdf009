"""A real HTTP server on loopback that records every request and answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Received, int], Any]
"""(request, times this path was seen before) -> status, (status, headers) or (…, body).
Called under the endpoint's lock: it must answer at once (see ``delay_for``)."""


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 256  # many requests in flight at once: the default backlog is 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients killed mid-request (fault tests) reset connections: not worth a trace."""


class RecordingEndpoint:
    """Answers 200 unless ``respond`` says otherwise; ``received`` lists every request."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []  # answered 2xx
        self.failed: list[Received] = []  # answered otherwise
        self.respond: Responder = lambda request, seen: 200
        self.delay = 0.0  # seconds to wait before answering, for slow-endpoint tests
        self.delay_for: Callable[[Received], float] | None = None
        """Per-request wait before answering (outside the lock: ``respond`` must not sleep,
        it would hold every other request up)."""
        self.concurrent = 0  # requests being answered right now
        self.most_concurrent = 0  # the most ever answered at once
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each response waits 40 ms for a delayed ACK

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Received(self.command, parts.path, parse_qs(parts.query),
                                   dict(self.headers.items()), self.rfile.read(length))
                endpoint._enter()
                try:
                    if endpoint.delay:
                        time.sleep(endpoint.delay)
                    if endpoint.delay_for is not None:
                        time.sleep(endpoint.delay_for(request))
                    status, headers, body = endpoint._record(request)
                finally:
                    endpoint._leave()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _enter(self) -> None:
        with self._lock:
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)

    def _leave(self) -> None:
        with self._lock:
            self.concurrent -= 1

    def _record(self, request: Received) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            key = request.path
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            answer = self.respond(request, seen)
            status, headers, *body = answer if isinstance(answer, tuple) else (answer, {})
            (self.received if 200 <= status < 300 else self.failed).append(request)
        default = b'{"ok": true}' if status < 400 else b'{"error": "told to fail"}'
        return status, headers, body[0] if body else default

    def start(self) -> RecordingEndpoint:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def keys(self) -> set[str]:
        """Distinct idempotency keys delivered (answered 2xx)."""
        return {r.headers["Idempotency-Key"] for r in self.received}
