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
import threading
import uuid
from typing import Any

import redis

from rest_consumer.state import keys

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_EVERY_SECONDS = 3.0
DONE = "done"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class TaskClaims:
    """Claims held by this worker process, renewed while their runs last."""

    def __init__(self, client: redis.Redis, done_seconds: float) -> None:
        self.redis = client
        self.done_seconds = done_seconds
        """How long a ``done`` mark outlives the run: longer than a reserved copy can wait."""
        self._held: dict[str, str] = {}  # task id -> this run's lease value
        self._lock = threading.Lock()
        self._renew = client.register_script(_RENEW)
        self._renewer: threading.Thread | None = None

    def claim(self, task_id: str, pipe: Any) -> tuple[bool, list[Any]]:
        """Whether this run may go ahead (False: another run has or had the task), and the
        replies of the commands already queued on ``pipe``, run in the same round trip."""
        lease = f"running:{uuid.uuid4().hex}"
        pipe.set(keys.task_claim(task_id), lease, nx=True, px=int(LEASE_SECONDS * 1000))
        *replies, claimed = pipe.execute()
        if not claimed:
            return False, replies
        with self._lock:
            self._held[task_id] = lease
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever,
                                                 name="claim-renewer", daemon=True)
                self._renewer.start()
        return True, replies

    def finish(self, task_id: str, pipe: Any) -> None:
        """The run recorded everything it learned (the mark is queued on ``pipe``, the
        task's outcome pipeline, so both land together): later copies have nothing to do."""
        self._forget(task_id)
        pipe.set(keys.task_claim(task_id), DONE, ex=int(self.done_seconds))

    def abandon(self, task_id: str) -> None:
        """The run failed before recording its outcomes: a redelivered copy may run."""
        self._forget(task_id)
        try:
            self.redis.delete(keys.task_claim(task_id))
        except redis.RedisError as e:  # the lease lapses within LEASE_SECONDS anyway
            log.warning("task %s: cannot release its claim (%s)", task_id, e)

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def _renew_forever(self) -> None:
        while True:
            threading.Event().wait(RENEW_EVERY_SECONDS)
            with self._lock:
                held = list(self._held.items())
            if not held:
                continue
            try:  # only a lease still ours: never over a done mark or another run's lease
                pipe = self.redis.pipeline(transaction=False)
                for task_id, lease in held:
                    self._renew(keys=[keys.task_claim(task_id)],
                                args=[lease, int(LEASE_SECONDS * 1000)], client=pipe)
                pipe.execute()
            except redis.RedisError as e:
                log.warning("cannot renew task claims (%s); will try again", e)

