"""What a reader sends as ``deliver`` tasks: consumed messages admitted through the job's
ordering, grouped into tasks of ``batch_size``, and recorded as out once the tasks are."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from confluent_kafka import KafkaError, Message

from rest_consumer.core.jobs import Job
from rest_consumer.core.messages import (
    Dispatcher,
    TaskMessage,
    TopicPartitionKey,
    offset_of,
    partition_of,
)
from rest_consumer.reader.ordering import OrderGate
from rest_consumer.reader.tracking import Partitions
from rest_consumer.state import heldbehind, keys, outstanding

log = logging.getLogger(__name__)

RELEASE_CHECK_SECONDS = 0.005
"""How often an ordered job's reader asks Redis whether its line holders are final."""


class DispatchFailed(Exception):
    """Raised when the broker refused the tasks: ``undelivered`` must be read again."""

    def __init__(self, undelivered: list[Message], error: Exception) -> None:
        super().__init__(f"could not dispatch tasks: {error}")
        self.undelivered = undelivered


class Outbox:
    """Sends one job's messages as tasks and tracks them in their partitions."""

    def __init__(self, job: Job, client: redis.Redis, dispatch: Dispatcher,
                 partitions: Partitions, gate: OrderGate | None, batch_size: int,
                 note_error: Callable[[str], None]) -> None:
        self.job = job
        self.job_id = str(job["id"])
        self.redis = client
        self.dispatch = dispatch
        self.partitions = partitions
        self.gate = gate
        self.batch_size = batch_size
        self.note_error = note_error
        """Shows an error in the reader's heartbeat (status) until its next good tick."""
        self._next_release_check = 0.0

    def send_consumed(self, messages: list[Message]) -> None:
        """Send what was consumed (less errors), or hold it behind its line (ordered jobs):
        either way it is tracked as out. Raises ``DispatchFailed``."""
        usable = [m for m in messages if self._usable(m)]
        if usable:
            ready = (usable if self.gate is None
                     else self.gate.admit(usable, self.partitions.known_final))
            self.send(ready, usable)

    def send(self, ready: list[Message], track: list[Message]) -> None:
        """Dispatch ``ready`` (less what must not be sent), then track ``track`` in offset
        order: what was sent, what was not to be, what waits behind its line."""
        send = [m for m in ready if self.partitions.needs_sending(m)]
        tasks = [send[i:i + self.batch_size] for i in range(0, len(send), self.batch_size)]
        ids: list[str] = []
        if tasks:
            try:
                ids = self.dispatch(self.job, [[TaskMessage.from_kafka(m) for m in task]
                                               for task in tasks])
            except Exception as e:
                raise DispatchFailed(track or send, e) from e
        self.partitions.track(track)
        if send:
            self.partitions.carried(dict(zip(ids, tasks, strict=True)))
            self._note_dispatched(send)

    def lines_freed(self) -> list[Message]:
        """Ordered jobs: which line holders are final now (asked every
        ``RELEASE_CHECK_SECONDS`` while a line is held); returns what waited behind them."""
        if self.gate is None or time.monotonic() < self._next_release_check:
            return []
        self._next_release_check = time.monotonic() + RELEASE_CHECK_SECONDS
        parts = sorted(self.gate.partitions())
        if not parts:
            return []
        pipe = self.redis.pipeline(transaction=False)
        busy = [self.gate.busy(topic, partition) for topic, partition in parts]
        for key, offsets in zip(parts, busy, strict=True):
            outstanding.queue_which_final(pipe, self.job_id, key, offsets)
            heldbehind.queue_which_lettered(pipe, self.job_id, key, offsets)
        replies = pipe.execute()
        released: list[Message] = []
        lettered: set[heldbehind.Where] = set()
        for n, ((topic, partition), offsets) in enumerate(zip(parts, busy, strict=True)):
            scores, marks = replies[2 * n], replies[2 * n + 1]
            final = [o for o, score in zip(offsets, scores, strict=True) if score is not None]
            lettered |= {(topic, partition, o)
                         for o, mark in zip(offsets, marks, strict=True) if mark is not None}
            released += self.gate.release(topic, partition, final)
        heldbehind.keep(self.redis, self.job_id, self.gate.take_behind(), lettered)
        return released

    def _note_dispatched(self, sent: list[Message]) -> None:
        """Count them, and add them to their partitions' ``out`` sets (for a next owner);
        after the tasks are out, so a count or an entry never covers a task that is not."""
        by_partition: dict[TopicPartitionKey, list[int]] = {}
        for m in sent:
            by_partition.setdefault(partition_of(m), []).append(offset_of(m))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.counters(self.job_id), "dispatched", len(sent))
        outstanding.record_sent(pipe, self.job_id, by_partition)
        try:
            pipe.execute()
        except redis.RedisError as e:  # the tasks are out; a next owner would send them again
            self.note_error(f"Redis: {e}")

    def _usable(self, msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("job %s: consumer error: %s", self.job_id, error)
        return False
