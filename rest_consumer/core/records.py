"""One record on its way through a task: ready to send (``Pending``), or with its outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from rest_consumer.core.errors import DeliveryError
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.messages import TaskMessage

log = logging.getLogger("rest_consumer.worker.execution")


@dataclass(frozen=True)
class Pending:
    """A record whose request is built and waits for a lane."""

    position: int
    """The message's place in its task."""
    message: TaskMessage
    index: int
    request: RequestSpec
    record_id: Any
    entity: bytes | None = None
    """Its ``ordering_key`` value: records of one entity in a message go one after another."""
    values: dict[str, Any] | None = None
    """Its datamap values (``item_results`` finds a record by one of them)."""


OutcomeKind = Literal["delivered", "skipped", "dead", "retry"]
"""``delivered``, ``skipped`` (emit flag), ``dead`` (a dead letter) or ``retry``."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one record in this attempt."""

    index: int | None
    """The record; None when the whole message failed (it could not be decoded)."""
    kind: OutcomeKind
    reason: str = ""
    error: DeliveryError | None = None
    request: RequestSpec | None = None
    record_id: Any = None
    retry_after: float | None = None
    failed: bool = False
    """For a retry: whether it counts as a failed attempt (a rate-limit wait does not)."""
    latency: float | None = None
    answer: tuple[int, dict[str, str], bytes] | None = None
    """A batch's answer (status, headers, body), for ``item_results`` to read per record."""

    @classmethod
    def dead(cls, index: int | None, reason: str, **details: Any) -> Outcome:
        return cls(index, "dead", reason, **details)

    @classmethod
    def skipped(cls, index: int) -> Outcome:
        return cls(index, "skipped")

    @classmethod
    def deferred(cls, index: int) -> Outcome:
        """Not attempted in this task (no time left): back to the queue, no attempt counted."""
        return cls(index, "retry", retry_after=0.0)

    @classmethod
    def waiting(cls, index: int, seconds: float) -> Outcome:
        """Not attempted: the job's endpoint asked for a pause, or its breaker is open. Back to
        the retry schedule for that long, no attempt counted."""
        return cls(index, "retry", retry_after=seconds)

    @classmethod
    def behind(cls, index: int) -> Outcome:
        """Not attempted: an earlier record of its entity (``ordering_key``) is to be retried,
        and this one goes after it, with it, when that retry is due."""
        return cls(index, "retry")

    @property
    def final(self) -> bool:
        return self.kind != "retry"


def log_failure(job_id: str, message: TaskMessage, index: int | None, record_id: Any,
                reason: str, level: int = logging.WARNING) -> None:
    """Every failure names the job and the entity: topic, partition, offset, index, id."""
    log.log(level, "job %s %s index=%s id=%s: %s", job_id, message.describe(), index,
            record_id, reason,
            extra={"job": job_id, "topic": message.topic, "partition": message.partition,
                   "offset": message.offset, "index": index})
