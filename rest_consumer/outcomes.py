"""What workers record in Redis: final outcomes (for the reader's watermark), counters,
request latencies, the job's last error and its dead letters."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import Any

from rest_consumer import keys
from rest_consumer.messages import TaskMessage
from rest_consumer.metrics import latency_bucket
from rest_consumer.records import Outcome

DEAD_LETTER_CAP = 10_000
"""Approximate length at which a job's dead-letter stream is trimmed (oldest first)."""


class TaskOutcomes:
    """Everything one ``deliver`` task learned, written to Redis in a handful of commands."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.counters: Counter[str] = Counter()
        self.final: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.latency: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.letters: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None

    def count(self, counter: str, amount: int = 1) -> None:
        self.counters[counter] += amount

    def record_final(self, message: TaskMessage) -> None:
        """A Kafka message reached its final outcome: the reader may commit past it."""
        if message.replay:  # a replayed dead letter: its offset was committed long ago
            return
        self.final[(message.topic, message.partition)].append(message.offset)

    def observe_latency(self, seconds: float) -> None:
        self.latency[latency_bucket(seconds)] += 1
        self.latency_sum += seconds

    def dead_letter(self, message: TaskMessage, outcome: Outcome) -> None:
        """A dead letter; the message itself is kept, for replay."""
        error, request = outcome.error, outcome.request
        self.letters.append({
            "reason": outcome.reason,
            "status": "" if error is None or error.status is None else error.status,
            "excerpt": "" if error is None else error.excerpt,
            "topic": message.topic, "partition": message.partition, "offset": message.offset,
            "index": "" if outcome.index is None else outcome.index,
            "record_id": "" if outcome.record_id is None else json.dumps(outcome.record_id,
                                                                         default=str),
            "request": json.dumps(request.public()) if request else "",
            "message": json.dumps(message.original().to_args()),
            "time": f"{time.time():.3f}",
        })
        self.count("dead_lettered")
        self.error = {"reason": outcome.reason, "topic": message.topic,
                      "partition": message.partition, "offset": message.offset,
                      "index": outcome.index, "time": time.time()}

    def write(self, pipe: Any) -> None:
        """Queue the Redis commands on ``pipe``; the caller executes it."""
        job_id = self.job_id
        for (topic, partition), offsets in self.final.items():
            pipe.rpush(keys.done(job_id, topic, partition), *offsets)
        for counter, amount in self.counters.items():
            if amount:
                pipe.hincrby(keys.counters(job_id), counter, amount)
        if self.latency:
            for bucket, amount in self.latency.items():
                pipe.hincrby(keys.latency(job_id), bucket, amount)
            pipe.hincrbyfloat(keys.latency(job_id), "sum", self.latency_sum)
        for letter in self.letters:
            pipe.xadd(keys.dead_letters(job_id), letter, maxlen=DEAD_LETTER_CAP,
                      approximate=True)
        if self.error is not None:
            pipe.set(keys.last_error(job_id), json.dumps(self.error))
