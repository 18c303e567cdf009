"""What workers record: final outcomes (for the reader's watermark), counters, request
latencies and the job's last error in Redis; dead letters in Kafka (``deadletters``)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome
from rest_consumer.state import heldbehind, keys, outstanding, throughput
from rest_consumer.state.deadletters import DeadLetter, index_letters
from rest_consumer.state.throughput import latency_bucket
from rest_consumer.state.topics import Refusal

log = logging.getLogger("rest_consumer.worker.execution")

MAX_LETTER_REFUSALS = 3
"""Kafka refusing a record's dead letter this often (not a timeout: a refusal of the record as
it is) makes the record final without its letter, logged and counted, so one message can
never hold its partition's commit point for ever."""


class TaskOutcomes:
    """Everything one ``deliver`` task learned, written to Redis in a handful of commands."""

    def __init__(self, job_id: str, ordered: bool = False) -> None:
        self.job_id = job_id
        self.ordered = ordered
        """An ordered job: its dead-lettered messages are marked (``heldbehind``)."""
        self.counters: Counter[str] = Counter()
        self.final: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.latency: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.letters: list[DeadLetter] = []
        self._lettered: list[TaskMessage] = []
        """The message (as this task had it) of each of ``letters``."""
        self.letter_offsets: list[int] = []
        """Where Kafka put ``letters`` in the job's dead-letter topic, once written."""
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
        self._lettered.append(message)
        self.letters.append(DeadLetter(
            message.original(), outcome.reason,
            None if error is None else error.status, "" if error is None else error.excerpt,
            message.attempt, outcome.index, outcome.record_id,
            request.public() if request else None, time.time()))
        self.count("dead_lettered")
        self.error = {"reason": outcome.reason, "topic": message.topic,
                      "partition": message.partition, "offset": message.offset,
                      "index": outcome.index, "time": time.time()}

    def settle_letters(self, results: list[int | Refusal]) -> list[TaskMessage]:
        """Kafka's answer for each of ``letters``: its offset, or a Refusal. Returns the
        messages to try again: those whose letters Kafka did not take (their records go
        back as retries, and the next attempt dead-letters them again), but a record whose
        letter Kafka refused MAX_LETTER_REFUSALS times is final without one."""
        again: dict[TaskMessage, list[int | None]] = defaultdict(list)
        refused: set[TaskMessage] = set()
        for message, letter, result in zip(self._lettered, self.letters, results, strict=True):
            if isinstance(result, int):
                self.letter_offsets.append(result)
            elif not result.retriable and message.letter_refusals + 1 >= MAX_LETTER_REFUSALS:
                self._lose(message, letter.index, result)
            else:
                again[message].append(letter.index)
                refused.update([message] if not result.retriable else [])
        self.count("dead_lettered", -sum(len(indexes) for indexes in again.values()))
        return [self._unfinal(message, indexes, message in refused)
                for message, indexes in again.items()]

    def _lose(self, message: TaskMessage, index: int | None, refusal: Refusal) -> None:
        log.error("job %s %s index=%s: Kafka refused its dead letter %d times (%s); the record "
                  "is final without one", self.job_id, message.describe(), index,
                  MAX_LETTER_REFUSALS, refusal.reason,
                  extra={"job": self.job_id, "topic": message.topic,
                         "partition": message.partition, "offset": message.offset})
        self.count("dead_lettered", -1)
        self.count("dead_letters_lost")

    def _unfinal(self, message: TaskMessage, indexes: list[int | None],
                 refused: bool) -> TaskMessage:
        """The message is not final after all: a retry of the records whose letters failed."""
        self.unfinal(message)
        again = message if None in indexes else message.retry(
            sorted(i for i in indexes if i is not None), failed=False)
        return replace(again, letter_refusals=message.letter_refusals + int(refused))

    def unfinal(self, message: TaskMessage) -> None:
        """The message is not final after all (something it must write was not written)."""
        offsets = self.final.get((message.topic, message.partition), [])
        if message.offset in offsets:
            offsets.remove(message.offset)

    def write(self, pipe: Any) -> None:
        """Queue the Redis commands on ``pipe``; the caller executes it."""
        job_id = self.job_id
        for (topic, partition), offsets in self.final.items():
            outstanding.queue_final(pipe, job_id, (topic, partition), offsets)
        for counter, amount in self.counters.items():
            if amount:
                pipe.hincrby(keys.counters(job_id), counter, amount)
        throughput.record(pipe, job_id, self.counters)
        if self.latency:
            for bucket, amount in self.latency.items():
                pipe.hincrby(keys.latency(job_id), bucket, amount)
            pipe.hincrbyfloat(keys.latency(job_id), "sum", self.latency_sum)
        index_letters(pipe, job_id, self.letter_offsets)
        if self.ordered:
            heldbehind.queue_lettered(pipe, job_id, [(m.topic, m.partition, m.offset)
                                                     for m in self._lettered if not m.replay])
        if self.error is not None:
            pipe.set(keys.last_error(job_id), json.dumps(self.error))
