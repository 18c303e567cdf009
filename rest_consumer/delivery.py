"""Sending one request over a pooled connection, and classifying the outcome."""

from __future__ import annotations

import email.utils
import random
import time

import urllib3

from rest_consumer.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.mapping import RequestSpec

EXCERPT_CHARS = 500
MAX_RETRY_DELAY = 1200.0
"""Never hold a retry longer: the Redis visibility timeout must stay above it (celery#2599)."""


class Sender:
    """An HTTP client for a worker process: urllib3's pool, no redirects, no client retries.

    urllib3 rather than requests: about a third of the CPU per request, and retries belong to
    Celery (a countdown), never to a sleep inside the worker slot.
    """

    def __init__(self, pool_size: int = 32) -> None:
        self.pool = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False,
                                        retries=False)

    def send(self, request: RequestSpec, timeout: float, retry_statuses: frozenset[int]) -> int:
        """Send; return the 2xx status, or raise Retryable/PermanentDeliveryError."""
        try:
            response = self.pool.request(
                request.method, request.url, body=request.body,
                headers={**request.headers, **request.secret_headers},
                timeout=urllib3.Timeout(total=timeout), redirect=False, retries=False,
            )
        except urllib3.exceptions.HTTPError as e:
            raise RetryableDeliveryError(f"{type(e).__name__}: {_reason(e)}") from e
        status = response.status
        if 200 <= status < 300:
            return status
        excerpt = response.data[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        if status in retry_statuses:
            raise RetryableDeliveryError(f"HTTP {status}", status, excerpt,
                                         retry_after(response.headers.get("Retry-After")))
        raise PermanentDeliveryError(f"HTTP {status}", status, excerpt)


def _reason(error: Exception) -> str:
    # urllib3 wraps the socket error; its text names host and port, never headers.
    return str(getattr(error, "reason", None) or error)


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
