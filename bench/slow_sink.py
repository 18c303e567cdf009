"""A slow endpoint for the benchmark: answers every request 200 after a fixed delay.

With a CAPACITY, it serves that many requests at once and answers 503 at once beyond that (a
small district server that refuses what it cannot hold); each refusal is a line of
``LOG_FILE.refused``.

asyncio protocols with keep-alive and no framework, so thousands of requests can wait at once
at little CPU: the sink is never the bottleneck it measures. Each answered request is logged
like the nginx sink (``<unix time> <X-Produced> <path>``), so one reader counts both.

    python bench/slow_sink.py PORT DELAY_SECONDS LOG_FILE [CAPACITY]
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Connection: keep-alive\r\n\r\n{}")
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
           b"Connection: keep-alive\r\n\r\n")


class Capacity:
    """Requests being served now, against the most the sink serves at once (0: no bound)."""

    def __init__(self, most: int, refused_log: IO[str] | None) -> None:
        self.most, self.active, self.refused_log = most, 0, refused_log


class SlowHTTP(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length body, answered after ``delay`` seconds."""

    def __init__(self, delay: float, log: IO[str], capacity: Capacity) -> None:
        self.delay, self.log, self.capacity = delay, log, capacity
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end == -1:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in head[1:])}
            end = head_end + 4 + int(headers.get("content-length") or 0)
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            path = head[0].split(" ")[1] if " " in head[0] else "/"
            produced = headers.get("x-produced", "-")
            capacity = self.capacity
            if capacity.most and capacity.active >= capacity.most:
                self.transport.write(REFUSED)
                if capacity.refused_log is not None:
                    capacity.refused_log.write(f"{time.time():.3f} {path}\n")
                continue
            capacity.active += 1
            asyncio.get_running_loop().call_later(self.delay, self._answer, path, produced)

    def _answer(self, path: str, produced: str) -> None:
        self.capacity.active -= 1
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(RESPONSE)
        self.log.write(f"{time.time():.3f} {produced} {path}\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, delay: float, log_path: str, most: int = 0) -> None:
    with open(log_path, "a", buffering=1) as log, \
            open(log_path + ".refused", "a", buffering=1) as refused:
        capacity = Capacity(most, refused)
        server = await asyncio.get_running_loop().create_server(
            lambda: SlowHTTP(delay, log, capacity), "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3],
                      int(sys.argv[4]) if len(sys.argv) > 4 else 0))
