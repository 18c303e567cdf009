"""A minimal HTTP/1.1 client connection: one request, one response, kept alive.

Why not ``http.client``: it parses every response's headers with the ``email`` package, which
measured 14 % of a worker's CPU on a fast endpoint (``bench/``), and it builds a request from
a dozen small writes. This module writes a request in one ``sendall`` and parses the response
head with ``bytes`` operations. It reads what delivery needs (status, ``Retry-After``, the
first ``limit`` bytes of the body) and nothing else: no redirects, no compression, no
``Expect: 100-continue``. Framing follows RFC 9112 §6.3; whatever it cannot trust (a body
longer than ``limit``, a malformed or oversized head, a response without a length) ends the
connection instead of guessing.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
"""The most a response's status line and headers may take."""
READ_SIZE = 64 * 1024
MAX_INTERIM_RESPONSES = 10
"""1xx responses read before the real one; more is a server stalling us."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_NO_BODY = (204, 304)


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection before the first byte of a response."""


class DeadlineExceeded(TimeoutError):
    """The exchange as a whole (send, head, body) took longer than its timeout."""


@dataclass(frozen=True)
class Response:
    """What came back: status, the first ``limit`` bytes of the body, and Retry-After."""

    status: int
    body: bytes
    retry_after: str | None
    fields: dict[bytes, bytes] = field(default_factory=dict)
    """Every header as parsed (lower-case names), for ``success_when``."""

    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.fields.items()}


class Connection:
    """A socket speaking HTTP/1.1 to one origin; ``open`` is False once it must not be reused."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host = host_header.encode("ascii")
        self.open = True
        self._buffer = bytearray()
        self._deadline = 0.0

    def close(self) -> None:
        self.open = False
        self.sock.close()

    def exchange(self, method: str, target: str, headers: dict[str, bytes],
                 body: bytes | None, deadline: float, limit: int) -> Response:
        """Send one request and read its response, all of it by ``deadline`` (monotonic):
        ``ValueError`` for a request that cannot be written safely; ``ProtocolError`` or
        ``OSError`` (``DeadlineExceeded`` among them) for a failed exchange."""
        self._deadline = deadline
        self.sock.settimeout(self._remaining())  # sendall's timeout covers the whole send
        self.sock.sendall(request_bytes(method, target, self.host, headers, body))
        return self._read_response(method == "HEAD", limit)

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the exchange took longer than its timeout")
        return remaining

    def _read_response(self, head_only: bool, limit: int) -> Response:
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            status, fields, keep_alive = self._read_head()
            if status >= 200:
                break
            if status == 101:
                raise ProtocolError("the server switched protocols")
            # 1xx interim responses (103 Early Hints …) precede the real one
        else:
            raise ProtocolError(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")
        if head_only or status in _NO_BODY:
            body = b""
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            body, complete = self._read_chunked(limit)
            keep_alive = keep_alive and complete
        elif b"content-length" in fields:
            body, complete = self._read_length(_content_length(fields), limit)
            keep_alive = keep_alive and complete
        else:
            body, keep_alive = self._read_until_close(limit), False
        if not keep_alive:
            self.close()
        retry_after = fields.get(b"retry-after")
        return Response(status, body, None if retry_after is None else
                        retry_after.decode("latin-1"), fields)

    def _read_head(self) -> tuple[int, dict[bytes, bytes], bool]:
        if not self._buffer and not self._fill():
            raise ConnectionClosed("connection closed before a response")
        return parse_head(self._until(b"\r\n\r\n", "the response head"))

    def _fill(self) -> bool:
        """Read more into the buffer, within the deadline; False when the server closed the
        connection. A peer that sends a byte at a time cannot stretch the exchange: every
        read waits only for what is left of the whole exchange's time."""
        self.sock.settimeout(self._remaining())
        data = self.sock.recv(READ_SIZE)
        self._buffer += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (ProtocolError when the connection ends first)."""
        while len(self._buffer) < n:
            if not self._fill():
                raise ProtocolError("connection closed inside the response body")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _read_length(self, length: int, limit: int) -> tuple[bytes, bool]:
        if length > limit:
            return self._take(limit), False
        return self._take(length), True

    def _read_until_close(self, limit: int) -> bytes:
        while len(self._buffer) < limit and self._fill():
            pass
        return bytes(self._buffer[:limit])

    def _read_chunked(self, limit: int) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            size = self._chunk_size()
            if size == 0:
                self._skip_trailers()
                return bytes(body), True
            if len(body) + size > limit:
                body += self._take(limit - len(body))
                return bytes(body), False
            body += self._take(size)
            if self._take(2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")

    def _line(self) -> bytes:
        return self._until(b"\r\n", "a chunk line")

    def _until(self, delimiter: bytes, what: str) -> bytes:
        """The bytes before ``delimiter``, which is consumed too (at most MAX_HEAD_BYTES)."""
        end = self._buffer.find(delimiter)
        while end == -1:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"{what} longer than {MAX_HEAD_BYTES} bytes")
            if not self._fill():
                raise ProtocolError(f"connection closed inside {what}")
            end = self._buffer.find(delimiter)
        data = bytes(self._buffer[:end])
        del self._buffer[:end + len(delimiter)]
        return data

    def _chunk_size(self) -> int:
        text = self._line().split(b";", 1)[0].strip()
        try:
            size = int(text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {text[:20]!r}") from None
        if size < 0 or text.startswith((b"-", b"+", b"0x", b"0X")):
            raise ProtocolError(f"bad chunk size {text[:20]!r}")
        return size

    def _skip_trailers(self) -> None:
        while self._line():
            pass


def request_bytes(method: str, target: str, host: bytes, headers: dict[str, bytes],
                  body: bytes | None) -> bytes:
    """The request as sent: request line, the headers, and the body. ``Host``,
    ``Accept-Encoding: identity`` and ``Content-Length`` are added unless given, as
    ``http.client`` does; ValueError for a control character anywhere in the head."""
    raw_target = target.encode("ascii")
    if not _TOKEN.fullmatch(method.encode("ascii")) or _BAD_TARGET.search(raw_target):
        raise ValueError("the request line holds a control character or a space")
    lines = [method.encode("ascii") + b" " + raw_target + b" HTTP/1.1"]
    given = set()
    for name, value in headers.items():
        raw = name.encode("ascii", "replace")
        if not _TOKEN.fullmatch(raw) or _BAD_VALUE.search(value):
            raise ValueError(f"header {name!r} is not a valid HTTP header")
        lines.append(raw + b": " + value)
        given.add(raw.lower())
    if b"host" not in given:
        lines.insert(1, b"Host: " + host)
    if b"accept-encoding" not in given:
        lines.append(b"Accept-Encoding: identity")
    if b"content-length" not in given and (body is not None or
                                           method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: %d" % len(body or b""))
    lines += [b"", body or b""]
    return b"\r\n".join(lines)


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes], bool]:
    """Status, fields (lower-case names; repeated ones joined by ``,``) and whether the
    connection may be kept alive, of a response head without its final CRLF CRLF."""
    status_line, _, rest = head.partition(b"\r\n")
    version, _, after = status_line.partition(b" ")
    code = after[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit() or after[3:4] not in (
            b"", b" "):
        raise ProtocolError(f"bad status line {status_line[:60]!r}")
    fields: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n") if rest else ():
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"bad header line {line[:60]!r}")
        name, value = name.lower(), value.strip(b" \t")
        fields[name] = fields[name] + b", " + value if name in fields else value
    connection = fields.get(b"connection", b"").lower()
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    return int(code), fields, keep_alive


def _content_length(fields: dict[bytes, bytes]) -> int:
    values = {v.strip() for v in fields[b"content-length"].split(b",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise ProtocolError("bad Content-Length")
    return int(value)
