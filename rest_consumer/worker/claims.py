"""One run per ``deliver`` task: why a premature redelivery cannot send anything twice.

Celery's Redis transport redelivers a task that stayed unacknowledged for the visibility
timeout. A task's run cannot outlive that timeout (its hard time limit is below it), but a
task a worker has *reserved* (prefetched) can wait in the worker's buffer past it, and then
two copies of the same task exist. Both carry the same task id, so each run first claims the
id in Redis (``SET NX``): the claim is a short lease while the run lasts, renewed by a
thread of the living worker, and turns into a ``done`` mark when the run ends. A copy that
finds the claim, running or done, does nothing. A worker that dies mid-run stops renewing,
so its lease lapses long before the broker redelivers the task (``LEASE_SECONDS`` against a
visibility timeout of tens of seconds), and the redelivered copy runs.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis

from rest_consumer.broker.roundtrip import LuaScript
from rest_consumer.state import keys
from rest_consumer.worker.leases import LeaseRenewer

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_EVERY_SECONDS = 3.0
DONE = "done"
_RUNNING = "running:"

_RENEW = LuaScript.read("rest_consumer.worker", "claims_renew.lua")


class TaskClaims:
    """Claims held by this worker process, renewed while their runs last."""

    def __init__(self, client: redis.Redis, done_seconds: float) -> None:
        self.redis = client
        self.done_seconds = done_seconds
        """How long a ``done`` mark outlives the run: longer than a reserved copy can wait."""
        self._renew = _RENEW.register(client)
        self.leases = LeaseRenewer("claim-renewer", RENEW_EVERY_SECONDS, self._renew_all)
        """Task id -> this run's lease value, renewed while the run lasts."""

    @staticmethod
    def queue_claim(pipe: Any, task_id: str) -> str:
        """Queue the claim of ``task_id`` on the task's first round trip; returns the lease
        that ``claimed`` reads the reply with."""
        lease = f"{_RUNNING}{uuid.uuid4().hex}"
        pipe.set(keys.task_claim(task_id), lease, nx=True, px=int(LEASE_SECONDS * 1000))
        return lease

    def claimed(self, task_id: str, lease: str, reply: Any) -> bool:
        """Whether this run may go ahead (False: another run has or had the task); if so,
        its lease is renewed while the run lasts."""
        if not reply:
            return False
        self.leases.hold({task_id: lease})
        return True

    def finish(self, task_id: str, pipe: Any) -> None:
        """The run recorded everything it learned (the mark is queued on ``pipe``, the
        task's outcome pipeline, so both land together): later copies have nothing to do."""
        self.leases.release([task_id])
        pipe.set(keys.task_claim(task_id), DONE, ex=int(self.done_seconds))

    def abandon(self, task_id: str) -> None:
        """The run failed before recording its outcomes: a redelivered copy may run."""
        self.leases.release([task_id])
        try:
            self.redis.delete(keys.task_claim(task_id))
        except redis.RedisError as e:  # the lease lapses within LEASE_SECONDS anyway
            log.warning("task %s: cannot release its claim (%s)", task_id, e)

    @staticmethod
    def running(client: redis.Redis, task_ids: list[str]) -> set[str]:
        """Those of ``task_ids`` whose claim is a running lease: a run holds them now."""
        if not task_ids:
            return set()
        claims = client.mget([keys.task_claim(t) for t in task_ids])
        return {t for t, claim in zip(task_ids, claims, strict=True)
                if isinstance(claim, bytes) and claim.startswith(_RUNNING.encode())}

    def _renew_all(self, held: dict[str, str]) -> None:
        """Only a lease still ours: never over a done mark or another run's lease."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id, lease in held.items():
            self._renew(keys=[keys.task_claim(task_id)],
                        args=[lease, int(LEASE_SECONDS * 1000)], client=pipe)
        pipe.execute()
