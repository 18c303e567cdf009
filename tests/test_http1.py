"""The HTTP/1.1 client connection against canned server bytes on a loopback socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rest_consumer.worker.http1 import (
    MAX_HEAD_BYTES,
    Connection,
    ConnectionClosed,
    ProtocolError,
    parse_head,
    request_bytes,
)

LIMIT = 1000


def soon(seconds: float = 5) -> float:
    """The deadline of an exchange that may take ``seconds``."""
    return time.monotonic() + seconds


class Canned:
    """A loopback server that answers each request with the next canned bytes, recording
    what it received. None closes the connection: after the answer before it, or instead of
    answering when it comes first."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.received: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def connection(self) -> Connection:
        sock = socket.create_connection(self.server.getsockname(), 5)
        return Connection(sock, "h.example")

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.server.accept()
            self.accepted += 1
            with conn:
                while self.answers:
                    request = conn.recv(65536)
                    if not request:
                        break
                    self.received.append(request)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if self.answers and self.answers[0] is None:  # close after answering
                        self.answers.pop(0)
                        break


@pytest.fixture
def canned() -> Iterator[type[Canned]]:
    yield Canned


def test_a_request_is_written_in_one_piece_with_host_and_length(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    response = server.connection().exchange("POST", "/a?b=1", {"X-Id": b"7"}, b"{}", soon(), LIMIT)
    assert (response.status, response.body) == (200, b"ok")
    assert server.received[0] == (b"POST /a?b=1 HTTP/1.1\r\nHost: h.example\r\nX-Id: 7\r\n"
                                  b"Accept-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}")


def test_a_kept_alive_connection_serves_the_next_request(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy"])
    conn = server.connection()
    assert conn.exchange("GET", "/", {}, None, soon(), LIMIT).status == 201
    second = conn.exchange("GET", "/", {}, None, soon(), LIMIT)
    assert (second.status, second.body, second.retry_after) == (503, b"busy", "7")
    assert conn.open and server.accepted == 1


def test_a_chunked_body_with_extensions_and_trailers(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"])
    conn = server.connection()
    assert conn.exchange("GET", "/", {}, None, soon(), LIMIT).body == b"abcde"
    assert conn.open


def test_a_body_over_the_limit_is_cut_and_ends_the_connection(canned: type[Canned]) -> None:
    big = b"x" * (LIMIT + 500)
    server = canned([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big),
                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)])
    first = server.connection()
    assert first.exchange("GET", "/", {}, None, soon(), LIMIT).body == big[:LIMIT]
    assert not first.open
    second = server.connection()
    assert second.exchange("GET", "/", {}, None, soon(), LIMIT).body == big[:LIMIT]
    assert not second.open


def test_a_body_without_length_runs_to_the_close(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil close", None])
    conn = server.connection()
    assert conn.exchange("GET", "/", {}, None, soon(), LIMIT).body == b"until close"
    assert not conn.open


def test_interim_responses_head_204_and_304_have_no_body(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                     b"HTTP/1.1 204 No Content\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
                     b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!"])
    conn = server.connection()
    assert conn.exchange("PUT", "/", {}, b"x", soon(), LIMIT).status == 204
    assert conn.exchange("HEAD", "/", {}, None, soon(), LIMIT).body == b""
    assert conn.exchange("GET", "/", {}, None, soon(), LIMIT).status == 304
    assert conn.exchange("GET", "/", {}, None, soon(), LIMIT).body == b"!"


def test_connection_close_and_http_1_0_keep_alive(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"])
    conn = server.connection()
    conn.exchange("GET", "/", {}, None, soon(), LIMIT)
    assert not conn.open
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive")[2] is True
    assert parse_head(b"HTTP/1.0 200 OK")[2] is False


def test_a_connection_closed_before_an_answer_says_so(canned: type[Canned]) -> None:
    server = canned([None])
    with pytest.raises(ConnectionClosed):
        server.connection().exchange("GET", "/", {}, None, soon(), LIMIT)


@pytest.mark.parametrize("answer,problem", [
    (b"HTTP/2 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 2xx OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "inside the response body"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD_BYTES, "longer than"),
])
def test_malformed_answers_are_protocol_errors(canned: type[Canned], answer: bytes,
                                                problem: str) -> None:
    server = canned([answer, None])
    with pytest.raises(ProtocolError, match=problem):
        server.connection().exchange("GET", "/", {}, None, soon(), LIMIT)


@pytest.mark.parametrize("method,target,headers", [
    ("GET", "/a b", {}),
    ("GET", "/a\r\nX: y", {}),
    ("GET", "/", {"X-A": b"1\r\nX-Injected: 2"}),
    ("GET", "/", {"X-A": b"1\nX"}),
    ("GET", "/", {"Bad Name": b"1"}),
    ("GE T", "/", {}),
])
def test_a_head_with_control_characters_is_never_written(method: str, target: str,
                                                         headers: dict[str, bytes]) -> None:
    with pytest.raises(ValueError):
        request_bytes(method, target, b"h", headers, None)


def test_given_host_and_length_are_not_doubled() -> None:
    raw = request_bytes("POST", "/", b"h", {"Host": b"o", "Content-Length": b"0"}, None)
    assert raw.count(b"Host:") == 1 and raw.count(b"Content-Length:") == 1


def _drip(server: socket.socket, head: bytes, every: float) -> None:
    """Answer one request with ``head``, then one header byte every ``every`` seconds."""
    conn, _ = server.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(head)
        try:
            for _ in range(200):
                time.sleep(every)
                conn.sendall(b"x")
        except OSError:
            pass


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nX-Slow: ", b"HTTP/1.1 100 Continue\r\n"])
def test_a_peer_that_drips_bytes_cannot_stretch_the_exchange(head: bytes) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_drip, args=(server, head, 0.2), daemon=True).start()
    conn = Connection(socket.create_connection(server.getsockname(), 5), "h.example")
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # DeadlineExceeded, or the last read's own timeout
        conn.exchange("GET", "/", {}, None, soon(1), LIMIT)
    assert time.monotonic() - started < 1.5
    conn.close()
    server.close()


def test_endless_interim_responses_are_a_protocol_error(canned: type[Canned]) -> None:
    server = canned([b"HTTP/1.1 103 Early Hints\r\n\r\n" * 11 + b"HTTP/1.1 200 OK\r\n\r\n"])
    with pytest.raises(ProtocolError, match="interim"):
        server.connection().exchange("GET", "/", {}, None, soon(), LIMIT)
