"""Outcomes recorded as they happen: a running task marks final, every ``FLUSH_SECONDS``, the
messages whose records were all delivered (or skipped) since, with their counters, in one
round trip from its own thread (the lanes go on sending meanwhile).

Why: a worker that dies mid-task has its task redelivered, and the copy skips what is final
(``start_run``). Recorded only at the task's end, a dead run's deliveries were all sent again;
recorded as they happen, only what was in flight, or answered within the last flush
interval, is. A message with a dead letter, a retry or a response to write is left to the
task's end, where those are written first (a message is final only once they are).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import redis

from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending
from rest_consumer.worker.outcomes import TaskOutcomes

log = logging.getLogger("rest_consumer.worker.execution")

FLUSH_SECONDS = 0.01
"""How often a running task records what became final: the most of a dead run's answered
requests that its redelivered copy sends again. A task shorter than this costs nothing."""

Conclude = Callable[[TaskMessage, list[Outcome], TaskOutcomes], object]
EachRecord = Callable[[list[tuple[Pending, Outcome]]], list[tuple[Pending, Outcome]]]


class Progress:
    """What one task has made final so far, and the messages already recorded."""

    def __init__(self, client: redis.Redis, job: CompiledJob, messages: list[TaskMessage],
                 prepared: dict[int, list[Outcome]], pending: list[Pending],
                 each_record: EachRecord, conclude: Conclude) -> None:
        self.redis = client
        self.job = job
        self.messages = messages
        self.prepared = prepared
        self.each_record = each_record
        self.conclude = conclude
        self.remaining = Counter(item.position for item in pending)
        """Records of each message still without an outcome."""
        self.blocked = {position for position, outcomes in prepared.items()
                        if any(o.kind not in ("delivered", "skipped") for o in outcomes)}
        self.got: dict[int, list[Outcome]] = {}
        self.recorded: set[int] = set()
        """Positions of the messages recorded final (``recorded_early``)."""
        self._seen = 0
        self._next = time.monotonic() + FLUSH_SECONDS

    @classmethod
    def applies_to(cls, job: CompiledJob, messages: list[TaskMessage]) -> bool:
        """Not for a job that writes responses (its messages are final once those are), nor
        for a task of one message (recorded at its end, as soon)."""
        return job.responses == "none" and len(messages) > 1

    def __call__(self, sent: list[tuple[Pending, Outcome]]) -> None:
        """Called from the task's thread while lanes send; records at most every
        ``FLUSH_SECONDS``."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + FLUSH_SECONDS
        end = len(sent)  # lanes may add more meanwhile: read next time
        new, self._seen = sent[self._seen:end], end
        ready = self._take(new)
        if ready:
            self._record(ready)

    def _take(self, new: list[tuple[Pending, Outcome]]) -> list[int]:
        """The messages that ``new`` outcomes made wholly delivered."""
        touched = set()
        for item, outcome in self.each_record(new):
            position = item.position
            self.got.setdefault(position, []).append(outcome)
            self.remaining[position] -= 1
            touched.add(position)
            if outcome.kind not in ("delivered", "skipped"):
                self.blocked.add(position)
        return sorted(p for p in touched if self.remaining[p] == 0 and p not in self.blocked)

    def _record(self, ready: list[int]) -> None:
        out = TaskOutcomes(self.job.id, ordered=self.job.ordered)
        for position in ready:
            self.conclude(self.messages[position],
                          self.prepared[position] + self.got[position], out)
        pipe = self.redis.pipeline(transaction=False)
        out.write(pipe)
        try:
            pipe.execute()
        except redis.RedisError as e:  # recorded at the task's end instead
            log.warning("job %s: cannot record outcomes as they happen (%s)", self.job.id, e)
            return
        self.recorded.update(ready)
