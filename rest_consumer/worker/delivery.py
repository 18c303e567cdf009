"""Sending one request over a kept-alive connection, and classifying the outcome."""

from __future__ import annotations

import email.utils
import random
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from rest_consumer.core.bodies import SuccessWhen
from rest_consumer.core.destinations import DestinationGuard
from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.tls import Contexts, TlsIdentity
from rest_consumer.worker.http1 import (
    Connection,
    ConnectionClosed,
    DeadlineExceeded,
    ProtocolError,
    Response,
)

EXCERPT_CHARS = 500
MAX_BODY_READ = 64 * 1024
"""Read at most this much of a response; a longer one closes its connection instead."""
MAX_RETRY_DELAY = 1200.0
"""The longest a retry waits, even when a server's ``Retry-After`` asks for more."""

_Key = tuple[str, str, int, str, str]
"""(scheme, host, port, the checked address the connection goes to, the TLS identity's
fingerprint or ""): a connection made with one job's client certificate serves that one."""
_REFUSED_BY_PEER = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA",
                    "CERTIFICATE_UNKNOWN", "ACCESS_DENIED", "CERTIFICATE_EXPIRED",
                    "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE", "HANDSHAKE_FAILURE")
"""TLS alerts by which a server refuses our certificate (or every protocol and cipher we
offer): a job's setup, not a passing fault. A server that closes without an alert (its close
can reset the connection before the alert arrives) is retried, and dead-lettered after
``max_retries`` with the TLS reason."""


class Sender:
    """The worker's HTTP client: one kept-alive connection per thread and destination.

    Not ``requests`` (about 700 µs of CPU per request here) nor ``http.client`` (about
    110 µs, most of it parsing response headers with the ``email`` package): ``http1``
    writes and reads HTTP/1.1 itself. No redirects, no client-side retries: retries belong
    to the pipeline, never to a sleep in a slot. Every request goes through the destination
    guard, and to the address it checked; ``Host``, SNI and the certificate use the name.
    """

    def __init__(self, guard: DestinationGuard) -> None:
        self.guard = guard
        self._local = threading.local()
        self.contexts = Contexts()

    def _connections(self) -> dict[_Key, Connection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _connect(self, key: _Key, deadline: float, tls: TlsIdentity | None) -> Connection:
        scheme, host, port, address, _ = key
        name = host_header(scheme, host, port)
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise DeadlineExceeded("no time left to connect")
        sock = socket.create_connection((address, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self.contexts.for_identity(tls).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return Connection(sock, name)

    def send(self, request: RequestSpec, timeout: float, retry_statuses: frozenset[int],
             tls: TlsIdentity | None = None, signature: dict[str, str] | None = None,
             success_when: SuccessWhen | None = None) -> int:
        """``answer``'s status."""
        return self.answer(request, timeout, retry_statuses, tls, signature,
                           success_when).status

    def answer(self, request: RequestSpec, timeout: float, retry_statuses: frozenset[int],
               tls: TlsIdentity | None = None, signature: dict[str, str] | None = None,
               success_when: SuccessWhen | None = None) -> Response:
        """Send (with this attempt's ``signature`` headers, when signed); return the 2xx
        answer (one ``success_when`` holds of, when the job has it), or raise
        Retryable/PermanentDeliveryError."""
        headers = {**request.headers, **request.secret_headers, **(signature or {})}
        response = self.request(request.method, request.url, request.body, headers, timeout,
                                 tls)
        status = response.status
        if 200 <= status < 300 and (success_when is None or success_when.holds(
                status, response.headers(), response.body)):
            return response
        body = response.body
        excerpt = body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        if 200 <= status < 300 and success_when is not None:
            raise PermanentDeliveryError(f"success_when: {success_when.source!r} does not "
                                         "hold of the answer", status, excerpt, body)
        if status in retry_statuses:
            raise RetryableDeliveryError(f"HTTP {status}", status, excerpt,
                                         retry_after(response.retry_after), body)
        raise PermanentDeliveryError(f"HTTP {status}", status, excerpt, body)

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                 timeout: float, tls: TlsIdentity | None = None) -> Response:
        """One request and its response, whatever the status, all within ``timeout`` seconds
        (connect, send, response head and body together); connection errors and a passed
        deadline are RetryableDeliveryError, a refused destination PermanentDeliveryError."""
        deadline = time.monotonic() + timeout
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
            raise PermanentDeliveryError(f"refusing to send to {scheme or '?'}://"
                                         f"{parts.hostname or '?'}: not a plain http(s) URL")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as e:
            raise PermanentDeliveryError(f"bad port in URL: {e}") from e
        key = (scheme, parts.hostname, port, self.guard.address_for(parts.hostname, port),
               tls.fingerprint if tls is not None and scheme == "https" else "")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            encoded = {k: v.encode("latin-1") for k, v in headers.items()}
        except UnicodeEncodeError as e:
            raise PermanentDeliveryError("a header value is not Latin-1 text") from e
        return self._over_connection(key, method, target, body, encoded, deadline, tls)

    def _over_connection(self, key: _Key, method: str, target: str, body: bytes | None,
                  headers: dict[str, bytes], deadline: float,
                  tls: TlsIdentity | None) -> Response:
        conns = self._connections()
        for attempt in (1, 2):
            conn = conns.get(key)
            reused = conn is not None
            try:
                if conn is None:
                    conn = conns[key] = self._connect(key, deadline, tls)
                response = conn.exchange(method, target, headers, body, deadline,
                                         MAX_BODY_READ)
                if not conn.open:
                    conns.pop(key, None)  # the server closes it, or we did not read it all
                return response
            except ValueError as e:  # the request itself cannot be written
                raise PermanentDeliveryError(f"cannot send this request: {e}") from e
            except ssl.SSLError as e:
                self._drop(key)
                raise _tls_failure(e) from e
            except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as e:
                self._drop(key)
                if reused and attempt == 1:
                    continue  # a kept-alive connection the server had closed: once more
                raise RetryableDeliveryError(f"{type(e).__name__}: {e}") from e
            except (OSError, ProtocolError) as e:
                self._drop(key)
                kind = "Timeout" if isinstance(e, socket.timeout | TimeoutError) else type(
                    e).__name__
                raise RetryableDeliveryError(f"{kind}: {e}") from e
        raise AssertionError("unreachable")

    def _drop(self, key: _Key) -> None:
        conn = self._connections().pop(key, None)
        if conn is not None:
            conn.close()


def _tls_failure(error: ssl.SSLError) -> RetryableDeliveryError | PermanentDeliveryError:
    """An untrusted server, or a server refusing our certificate, will not change by itself
    (a dead letter naming the TLS reason); other TLS failures are retried."""
    reason = f"TLS: {getattr(error, 'verify_message', None) or error.reason or error}"
    if isinstance(error, ssl.SSLEOFError):
        reason += " (the server ended the connection: does it require a client certificate?)"
    if isinstance(error, ssl.SSLCertVerificationError) or any(
            alert in str(error.reason or "") for alert in _REFUSED_BY_PEER):
        return PermanentDeliveryError(reason)
    return RetryableDeliveryError(reason)


def host_header(scheme: str, host: str, port: int) -> str:
    """``Host`` as ``http.client`` writes it: A-labels, brackets around IPv6, no default port
    (UnicodeError, a ValueError, for a name IDNA cannot encode)."""
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


def retry_after(header: str | None, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff(attempt: int, base: float, cap: float, asked: float | None = None,
            rand: random.Random | None = None) -> float:
    """Exponential backoff with full jitter; a server's ``Retry-After`` wins when given."""
    if asked is not None:
        return min(asked, MAX_RETRY_DELAY)
    ceiling = min(cap, base * (2 ** attempt))
    return (rand or random).uniform(0, ceiling)
