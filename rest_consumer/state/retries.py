"""Retries that wait in Redis, not in workers (DESIGN §4, §8).

A retry is a member of one sorted set, scored by when it is due, written in the same Redis
pipeline as the task's outcomes (so a worker that dies after that pipeline loses nothing).
The pump, a thread of every reader process, moves due retries onto the Celery queue; one
pump works at a time (a short Redis lease). Nothing waits unacknowledged in a worker, so the
broker's visibility timeout only has to outlast one task's run, and a dead worker's tasks
come back within it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from rest_consumer.core.messages import TaskMessage
from rest_consumer.state import keys
from rest_consumer.state.replies import as_text

log = logging.getLogger(__name__)

PUMP_INTERVAL_SECONDS = 0.2
PUMP_BATCH = 500
PUMP_LEASE_SECONDS = 5


@dataclass(frozen=True)
class Retry:
    """One message waiting to be sent again."""

    job_id: str
    job_hash: str
    queue: str | None
    message: TaskMessage

    def encode(self) -> str:
        # A fresh nonce keeps two retries of one message apart in the set.
        return json.dumps({"j": self.job_id, "h": self.job_hash, "q": self.queue,
                           "m": self.message.to_args(), "n": uuid.uuid4().hex[:8]})

    @classmethod
    def decode(cls, raw: bytes | str) -> Retry:
        body = json.loads(raw)
        return cls(body["j"], body["h"], body["q"], TaskMessage.from_args(body["m"]))


def schedule(pipe: Any, retry: Retry, delay: float) -> None:
    """Queue the command on ``pipe`` (the task's outcome pipeline)."""
    pipe.zadd(keys.RETRIES, {retry.encode(): time.time() + delay})


Publisher = Callable[[list[Retry]], None]
"""Sends retries as ``deliver`` tasks (``tasks.make_retry_publisher``)."""


class RetryPump(threading.Thread):
    """Moves due retries to the Celery queue, while this process holds the pump lease."""

    def __init__(self, client: redis.Redis, publish: Publisher, instance: str) -> None:
        super().__init__(name="retry-pump", daemon=True)
        self.redis = client
        self.publish = publish
        self.instance = instance
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.wait(PUMP_INTERVAL_SECONDS):
            try:
                while self._holds_lease() and self.pump_once() == PUMP_BATCH:
                    pass
            except redis.RedisError as e:
                log.warning("retry pump: Redis unavailable (%s); will try again", e)
            except Exception:
                log.exception("retry pump: unexpected error; will try again")

    def _holds_lease(self) -> bool:
        lease = keys.RETRY_PUMP
        if self.redis.set(lease, self.instance, nx=True, ex=PUMP_LEASE_SECONDS):
            return True
        holder = self.redis.get(lease)
        if holder is not None and as_text(holder) == self.instance:
            self.redis.expire(lease, PUMP_LEASE_SECONDS)
            return True
        return False

    def pump_once(self) -> int:
        """Publish what is due, then remove it (a crash in between duplicates, never loses)."""
        due: list[bytes] = list(self.redis.zrangebyscore(  # type: ignore[arg-type]
            keys.RETRIES, "-inf", time.time(), start=0, num=PUMP_BATCH))
        if not due:
            return 0
        retries = []
        for raw in due:
            try:
                retries.append(Retry.decode(raw))
            except (ValueError, KeyError, TypeError) as e:
                log.error("retry pump: dropping a malformed retry: %s", e)
        if retries:
            self.publish(retries)
        self.redis.zrem(keys.RETRIES, *due)
        return len(due)
