"""A slow endpoint for the benchmark: answers every request 200 after a fixed delay.

asyncio protocols with keep-alive and no framework, so thousands of requests can wait at once
at little CPU: the sink is never the bottleneck it measures. Each answered request is logged
like the nginx sink (``<unix time> <X-Produced> <path>``), so one reader counts both.

    python bench/slow_sink.py PORT DELAY_SECONDS LOG_FILE
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Connection: keep-alive\r\n\r\n{}")


class SlowHTTP(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length body, answered after ``delay`` seconds."""

    def __init__(self, delay: float, log: IO[str]) -> None:
        self.delay, self.log = delay, log
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
            asyncio.get_running_loop().call_later(self.delay, self._answer, path, produced)

    def _answer(self, path: str, produced: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(RESPONSE)
        self.log.write(f"{time.time():.3f} {produced} {path}\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, delay: float, log_path: str) -> None:
    with open(log_path, "a", buffering=1) as log:
        server = await asyncio.get_running_loop().create_server(
            lambda: SlowHTTP(delay, log), "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
