"""What workers record in Redis: final outcomes (for the reader's watermark), counters,
the job's last error and its dead letters."""

from __future__ import annotations

import json
import time
from typing import Any

from rest_consumer import keys

DEAD_LETTER_CAP = 10_000
"""Approximate length at which a job's dead-letter stream is trimmed (oldest first)."""


def record_final(pipe: Any, job_id: str, message: dict[str, Any]) -> None:
    """A Kafka message reached its final outcome: the reader may commit past it."""
    if message.get("r"):  # a replayed dead letter: its offset was committed long ago
        return
    pipe.rpush(keys.done(job_id, message["t"], message["p"]), message["o"])
    pipe.decr(keys.in_flight(job_id))


def count(pipe: Any, job_id: str, counter: str, amount: int = 1) -> None:
    pipe.hincrby(keys.counters(job_id), counter, amount)


def dead_letter(pipe: Any, job_id: str, message: dict[str, Any], index: int | None,
                reason: str, *, status: int | None = None, excerpt: str = "",
                request: dict[str, Any] | None = None, record_id: Any = None) -> None:
    """Append to the job's capped dead-letter stream; the message itself is kept for replay."""
    entry = {
        "reason": reason, "status": "" if status is None else status, "excerpt": excerpt,
        "topic": message["t"], "partition": message["p"], "offset": message["o"],
        "index": "" if index is None else index,
        "record_id": "" if record_id is None else json.dumps(record_id, default=str),
        "request": json.dumps(request) if request else "",
        "message": json.dumps({k: v for k, v in message.items() if k not in ("a", "i", "r")}),
        "time": f"{time.time():.3f}",
    }
    pipe.xadd(keys.dead_letters(job_id), entry, maxlen=DEAD_LETTER_CAP, approximate=True)
    count(pipe, job_id, "dead_lettered")
    last_error(pipe, job_id, message, index, reason)


def last_error(pipe: Any, job_id: str, message: dict[str, Any], index: int | None,
               reason: str) -> None:
    pipe.set(keys.last_error(job_id), json.dumps({
        "reason": reason, "topic": message["t"], "partition": message["p"],
        "offset": message["o"], "index": index, "time": time.time()}))
