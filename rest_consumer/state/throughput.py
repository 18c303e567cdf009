"""Deliveries and dead letters per 10-second bucket over the last 15 minutes, per job: what
the console's rate column and throughput chart show, and ``status`` reports.

Buckets live in one Redis hash per job and per 15-minute window (field = bucket number), so
a key never holds more than one window's buckets and expires on its own: no trimming, and a
job that goes quiet leaves nothing behind.

Also the request-duration histogram's buckets, which workers count and ``/metrics`` reads."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from typing import Any

from rest_consumer.state import keys

BUCKET_S = 10
WINDOW_BUCKETS = 90
"""Buckets per window (15 minutes); the chart shows one window's worth."""
RATE_BUCKETS = 6
"""The rate column: the last minute's complete buckets."""
KINDS = ("delivered", "dead_lettered")


def _bucket(now: float) -> int:
    return int(now // BUCKET_S)


def _window_key(job_id: str, bucket: int) -> str:
    return keys.throughput(job_id, bucket // WINDOW_BUCKETS)


def record(pipe: Any, job_id: str, counts: dict[str, int], now: float | None = None) -> None:
    """Queue on ``pipe``: add ``counts`` (of ``KINDS``) to the current bucket."""
    bucket = _bucket(time.time() if now is None else now)
    key = _window_key(job_id, bucket)
    added = False
    for kind in KINDS:
        if counts.get(kind):
            pipe.hincrby(key, f"{bucket}:{kind}", counts[kind])
            added = True
    if added:
        pipe.expire(key, 2 * WINDOW_BUCKETS * BUCKET_S)


def queue_read(pipe: Any, job_id: str, now: float) -> None:
    """Queue the two reads (this window and the one before) that ``series`` takes apart."""
    bucket = _bucket(now)
    pipe.hgetall(_window_key(job_id, bucket - WINDOW_BUCKETS))
    pipe.hgetall(_window_key(job_id, bucket))


def recent_fields(now: float, buckets: int) -> list[tuple[int, list[str]]]:
    """Where the last ``buckets`` delivery counts are (the current bucket last): the window
    before the current one and the current one, each with its fields (either list may be
    empty). ``recent`` reads the counts in this order."""
    current = _bucket(now)
    window = current // WINDOW_BUCKETS
    wanted = range(current - buckets + 1, current + 1)
    return [(window - 1, [f"{b}:delivered" for b in wanted if b // WINDOW_BUCKETS < window]),
            (window, [f"{b}:delivered" for b in wanted if b // WINDOW_BUCKETS == window])]


def recent(replies: Iterable[list[bytes | None]]) -> dict[str, Any]:
    """``{"delivered": [...], "rate"}`` from the counts of ``recent_fields``, in order."""
    delivered = [int(value or 0) for reply in replies for value in reply]
    return {"delivered": delivered, "rate": _rate(delivered)}


def _rate(delivered: list[int]) -> float:
    """Deliveries per second over the last complete minute (the current bucket is unfinished)."""
    return round(sum(delivered[-1 - RATE_BUCKETS:-1]) / (RATE_BUCKETS * BUCKET_S), 2)


def series(replies: Iterable[dict[bytes, bytes]], now: float) -> dict[str, Any]:
    """``{"bucket_s", "delivered": [...], "dead_lettered": [...], "rate"}`` from the replies
    of ``queue_read``: the last ``WINDOW_BUCKETS`` buckets, oldest first, the current
    (unfinished) one last; ``rate`` is deliveries per second over the last complete minute."""
    current = _bucket(now)
    first = current - WINDOW_BUCKETS + 1
    counts = {kind: [0] * WINDOW_BUCKETS for kind in KINDS}
    for reply in replies:
        for field, value in reply.items():
            number, _, kind = field.decode().partition(":")
            if kind in counts and first <= int(number) <= current:
                counts[kind][int(number) - first] = int(value)
    return {"bucket_s": BUCKET_S, **counts, "rate": _rate(counts["delivered"])}


def read(client: Any, job_id: str, now: float | None = None) -> dict[str, Any]:
    """One job's series (see ``series``)."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    queue_read(pipe, job_id, now)
    return series(pipe.execute(), now)


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> str:
    """The histogram field one request's duration counts in (one bucket, not cumulative)."""
    return str(bisect.bisect_left(LATENCY_BUCKETS, seconds))
