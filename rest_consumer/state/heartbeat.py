"""The one owner of the readers' heartbeat: what a reader reports of a job, and for how long
the report counts."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rest_consumer.state import keys
from rest_consumer.state.replies import as_text

KEY_TTL_SECONDS = 60
"""Redis drops a job's heartbeat hash when no reader refreshed it for this long."""
FRESH_SECONDS = 30.0
"""A reader whose heartbeat is older than this is taken for dead (it beats every second)."""


@dataclass(frozen=True)
class Heartbeat:
    """One reader's state for one job: the job version it runs, and its partitions."""

    hash: str | None
    paused: bool = False
    error: str | None = None
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``topic[partition]`` -> committed watermark, high watermark, lag."""
    in_flight: int = 0
    """Messages this reader dispatched that have not reached a final outcome."""
    held: int = 0
    """Ordered jobs: messages waiting behind an earlier one of their key or partition."""
    oldest_held_s: float | None = None
    """Ordered jobs: how long the longest-waiting of those has waited."""
    ts: float = field(default_factory=time.time)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Heartbeat:
        body = json.loads(raw)
        return cls(body.get("hash"), bool(body.get("paused")), body.get("error"),
                   dict(body.get("partitions") or {}), int(body.get("in_flight", 0)),
                   int(body.get("held", 0)), body.get("oldest_held_s"),
                   float(body.get("ts", 0)))

    def fresh(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.ts <= FRESH_SECONDS


def beat(pipe: Any, job_id: str, instance: str, heartbeat: Heartbeat) -> None:
    """Queue a reader's heartbeat on ``pipe``."""
    key = keys.reader_heartbeat(job_id)
    pipe.hset(key, instance, heartbeat.encode())
    pipe.expire(key, KEY_TTL_SECONDS)


def fresh_heartbeats(client: Any, job_id: str,
                     but: str | None = None) -> list[Heartbeat]:
    """The heartbeats of the readers running this job now (all but instance ``but``)."""
    return fresh_of(client.hgetall(keys.reader_heartbeat(job_id)), but=but)


def fresh_of(raw: dict[Any, Any], now: float | None = None,
             but: str | None = None) -> list[Heartbeat]:
    """The fresh heartbeats in a reply of HGETALL on a job's heartbeat hash."""
    now = time.time() if now is None else now
    beats = [Heartbeat.decode(v) for k, v in raw.items() if but is None or as_text(k) != but]
    return [b for b in beats if b.fresh(now)]


def in_flight(client: Any, job_id: str) -> int:
    """Messages of the job dispatched and not yet final, as its readers count them: derived
    from what is outstanding, so it cannot drift (a lost task stays counted until the reader
    re-dispatches it)."""
    return sum(b.in_flight for b in fresh_heartbeats(client, job_id))


def held(client: Any, job_id: str) -> dict[str, Any]:
    """Ordered jobs: messages waiting behind held keys or partitions, and the oldest wait."""
    beats = fresh_heartbeats(client, job_id)
    waits = [b.oldest_held_s for b in beats if b.oldest_held_s is not None]
    return {"held": sum(b.held for b in beats), "oldest_wait_s": max(waits, default=None)}
