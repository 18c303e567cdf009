"""Every job's figures at a glance, read for any number of jobs in one Redis round trip: what
the console's jobs table shows each refresh."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rest_consumer import keys, throughput
from rest_consumer.heartbeat import Heartbeat, fresh_of
from rest_consumer.jobs import Job
from rest_consumer.status import state_of

READS_PER_JOB = 7
"""Heartbeats, counters, last error, dead-letter index size, the throughput buckets (two
replies) and whether the dead-letter index was rebuilt: see ``_queue``."""
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
                "rate": self.throughput["rate"],
                "spark": self.throughput["delivered"][-SPARK_BUCKETS:],
                "delivered": self.counters.get("delivered", 0),
                "dead_letters": self.dead_letters, "last_error": self.last_error}


def snapshots(client: Any, jobs: list[Job], now: float | None = None) -> list[JobSnapshot]:
    """Every job's snapshot, from one pipelined round trip."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    for job in jobs:
        _queue(pipe, job["id"], now)
    replies = pipe.execute()
    return [_snapshot(job, replies[i * READS_PER_JOB:(i + 1) * READS_PER_JOB], now)
            for i, job in enumerate(jobs)]


def _queue(pipe: Any, job_id: str, now: float) -> None:
    pipe.hgetall(keys.reader_heartbeat(job_id))
    pipe.hgetall(keys.counters(job_id))
    pipe.get(keys.last_error(job_id))
    pipe.zcard(keys.dead_letter_index(job_id))
    throughput.queue_read(pipe, job_id, now)
    pipe.exists(keys.dead_letter_scanned(job_id))


def _snapshot(job: Job, replies: list[Any], now: float) -> JobSnapshot:
    beats, counters, last_error, letters, *buckets, scanned = replies
    return JobSnapshot(
        job, fresh_of(beats, now),
        {k.decode(): int(v) for k, v in counters.items()},
        json.loads(last_error) if last_error else None,
        int(letters) if scanned else None,
        throughput.series(buckets, now))
