"""Adaptive batching: a job's messages are held in the reader only while its workers are busy.

When a worker is free (the job's Celery queue is empty), what the reader has goes at once, so
a lone message never lingers. While every worker is busy, new messages would only wait in the
queue as many small tasks, each paying Celery's per-task cost: the reader holds them instead
and packs them into tasks of up to ``batch_size`` messages. Held messages are not dispatched,
so they are never committed: a crash or rebalance re-reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from confluent_kafka import Message

log = logging.getLogger(__name__)

TP = tuple[str, int]


class AdaptiveBatcher:
    """The messages a reader holds back, and when to let them go."""

    def __init__(self, queue_depth: Callable[[], int], batch_size: int) -> None:
        self.queue_depth = queue_depth
        self.batch_size = batch_size
        self.held: list[Message] = []

    def add(self, messages: list[Message]) -> None:
        self.held += messages

    def ready(self) -> bool:
        """True when there is something to send and a worker is free, or a batch is full."""
        if not self.held:
            return False
        if len(self.held) >= self.batch_size:
            return True
        try:
            return self.queue_depth() == 0
        except redis.RedisError as e:  # dispatching will fail loudly and be retried
            log.debug("queue depth unknown (%s): dispatching", e)
            return True

    def take(self) -> list[Message]:
        taken, self.held = self.held, []
        return taken

    def drop(self, partitions: set[TP] | None = None) -> None:
        """Forget held messages (all, or those of ``partitions``): they will be read again."""
        if partitions is None:
            self.held = []
        else:
            self.held = [m for m in self.held if (m.topic(), m.partition()) not in partitions]
