"""``set_offset`` requests on a running job: stored with a generation, applied by readers.

The API stores the request (target offset, the partitions the job had then, a generation
from a per-job counter) and announces it; each reader applies it to the partitions it holds
when the announcement arrives, at its next reconcile, or when a partition is assigned to it
later, and marks each partition applied with the generation. So a missed pub/sub message or
a restarted reader delays the request by one reconcile interval at most, never loses it,
and a request is never applied twice. ``status`` shows it pending until every partition is
applied. Like all of Redis's state, a request still pending when Redis loses its data is
lost with it; ``status`` then shows none, and the operator asks again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rest_consumer.state import keys
from rest_consumer.state.replies import as_text


def partition_name(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


@dataclass(frozen=True)
class SeekRequest:
    generation: int
    offset: int | str
    """An offset, ``earliest`` or ``latest``."""
    partitions: tuple[str, ...]
    """The job's partitions when it was asked for (``topic[n]``); later ones are not moved."""
    time: float


def submit(client: Any, job_id: str, offset: int | str, partitions: list[str]) -> SeekRequest:
    generation = int(client.incr(keys.seek_generation(job_id)))
    request = SeekRequest(generation, offset, tuple(partitions), time.time())
    client.set(keys.seek_request(job_id), json.dumps(
        {"generation": generation, "offset": offset, "partitions": partitions,
         "time": request.time}))
    return request


def current(client: Any, job_id: str) -> SeekRequest | None:
    raw = client.get(keys.seek_request(job_id))
    if not raw:
        return None
    body = json.loads(raw)
    return SeekRequest(int(body["generation"]), body["offset"], tuple(body["partitions"]),
                       float(body["time"]))


def applied(client: Any, job_id: str) -> dict[str, int]:
    """The generation last applied to each partition."""
    return {as_text(k): int(v) for k, v in client.hgetall(keys.seek_applied(job_id)).items()}


def pending(client: Any, job_id: str, request: SeekRequest) -> list[str]:
    done = applied(client, job_id)
    return [p for p in request.partitions if done.get(p, 0) < request.generation]


def mark_applied(client: Any, job_id: str, generation: int, partitions: list[str]) -> None:
    if partitions:
        client.hset(keys.seek_applied(job_id), mapping=dict.fromkeys(partitions, generation))


def progress(client: Any, job_id: str) -> dict[str, Any] | None:
    """The newest request as ``status`` shows it, or None."""
    request = current(client, job_id)
    if request is None:
        return None
    waiting = pending(client, job_id, request)
    return {"generation": request.generation, "offset": request.offset,
            "requested_at": request.time, "state": "pending" if waiting else "applied",
            "pending_partitions": waiting}
