"""Every job's figures at a glance, read for any number of jobs in one Redis round trip: what
the console's jobs table shows each refresh."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rest_consumer.broker.roundtrip import LuaScript
from rest_consumer.core.jobs import Job
from rest_consumer.state import keys, throughput
from rest_consumer.state.heartbeat import Heartbeat, fresh_of
from rest_consumer.web.status import state_of

SPARK_BUCKETS = 30
"""The table's sparkline: the last five minutes of ten-second buckets."""


@dataclass(frozen=True)
class JobSnapshot:
    """One job's figures as Redis held them at one moment."""

    job: Job
    beats: list[Heartbeat]
    counters: dict[str, int]
    last_error: dict[str, Any] | None
    dead_letters: int | None
    """Live dead letters; None while the index waits to be rebuilt from Kafka (after Redis
    lost it: the job's own page rebuilds it)."""
    throughput: dict[str, Any]
    """The last ``SPARK_BUCKETS`` delivery counts and the rate (``throughput.recent``)."""

    def lag(self) -> int | None:
        """Messages behind the high watermarks, as the job's readers last saw them."""
        lags = [p["lag"] for b in self.beats for p in b.partitions.values()
                if isinstance(p, dict) and p.get("lag") is not None]
        return sum(lags) if lags else None

    def row(self) -> dict[str, Any]:
        """The jobs table's row."""
        return {"id": self.job["id"], "owner": self.job.get("owner"),
                **state_of(self.job, self.beats), "lag": self.lag(),
                "in_flight": sum(b.in_flight for b in self.beats),
                "rate": self.throughput["rate"], "spark": self.throughput["delivered"],
                "delivered": self.counters.get("delivered", 0),
                "dead_letters": self.dead_letters, "last_error": self.last_error}


_READ = LuaScript.read("rest_consumer.web", "overview_read.lua")


def snapshots(client: Any, jobs: list[Job], now: float | None = None) -> list[JobSnapshot]:
    """Every job's snapshot, from one Redis command (a script: a pipeline of 500 jobs' reads
    cost the API more time packing and parsing commands than Redis took to answer them)."""
    if not jobs:
        return []
    now = time.time() if now is None else now
    (old_window, old_fields), (new_window, new_fields) = throughput.recent_fields(
        now, SPARK_BUCKETS)
    script_keys: list[str] = []
    for job in jobs:
        job_id = job["id"]
        script_keys += [keys.reader_heartbeat(job_id), keys.counters(job_id),
                        keys.last_error(job_id), keys.dead_letter_index(job_id),
                        keys.dead_letter_scanned(job_id), keys.throughput(job_id, old_window),
                        keys.throughput(job_id, new_window)]
    replies = _READ.register(client)(
        keys=script_keys, args=[SPARK_BUCKETS, len(old_fields), *old_fields, *new_fields])
    return [_snapshot(job, reply, now) for job, reply in zip(jobs, replies, strict=True)]


def _snapshot(job: Job, reply: list[Any], now: float) -> JobSnapshot:
    beats, counters, last_error, letters, scanned, spark = reply
    return JobSnapshot(
        job, fresh_of(_pairs(beats), now),
        {k.decode(): int(v) for k, v in _pairs(counters).items()},
        json.loads(last_error) if last_error else None,
        int(letters) if scanned else None,
        throughput.recent([spark]))


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """HGETALL's reply inside a script: a flat list of field, value, field, value…"""
    return dict(zip(flat[::2], flat[1::2], strict=True))
