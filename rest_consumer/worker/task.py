"""The worker's Celery app and the task ``rest_consumer.deliver``.

Task arguments carry the job id and hash, never a secret: workers read the job from the
store. ``rest_consumer.tasks`` hands this module's ``app`` to ``celery -A``.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_process_init

from rest_consumer.broker import acks
from rest_consumer.broker.celery_app import TASK, create_celery
from rest_consumer.core import config
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.processes import die_with_parent
from rest_consumer.worker import dead_workers
from rest_consumer.worker.execution import (
    RedisOutage,
    WorkerContext,
    deliver_messages,
    start_run,
)

log = logging.getLogger(__name__)

# The worker process's settings, read once, when Celery imports this module.
_settings = config.from_env()
app = create_celery(_settings)
_request_class = acks.Request if _settings.fast_transport else "celery.worker.request:Request"
_context: dict[str, WorkerContext] = {}
dead_workers.install(app, _settings)


def context() -> WorkerContext:
    """This worker process's Redis client, HTTP pool and job cache (built after fork)."""
    if "ctx" not in _context:
        _context["ctx"] = WorkerContext(app.rest_consumer_settings)
    return _context["ctx"]


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    _context.clear()
    # A pool process outlives a SIGKILLed worker otherwise: half-done, still renewing its
    # task claims and request permits, so its tasks could not be redelivered until it ends.
    die_with_parent(signal.SIGKILL)


@app.task(name=TASK, acks_late=True, bind=True, Request=_request_class)
def deliver(task: Task, job_id: str, job_hash: str,
            messages: list[dict[str, Any]]) -> str | None:
    """Decode, map and send every record of ``messages``; retry, dead-letter, record outcomes.

    Each task id runs once (``claims``): a copy redelivered while the first waited in a
    worker's buffer finds the claim and does nothing. Returns ``acks.SETTLED`` when the
    task acknowledged its own message with its outcomes.
    """
    ctx, task_id = context(), str(task.request.id)
    job = ctx.job(job_id, job_hash)
    if job is None:
        log.warning("job %s no longer exists; dropping %d message(s)", job_id, len(messages))
        return None
    try:
        run = start_run(ctx, task_id, job, _task_messages(job_id, messages))
    except RedisOutage as e:
        raise Reject(str(e), requeue=True) from e
    if run is None:
        log.warning("job %s: task %s was run elsewhere (a copy redelivered while it waited "
                    "in a worker's buffer); skipped", job_id, task_id)
        return None
    try:
        acked = deliver_messages(ctx, job, run)
    except BaseException as e:
        ctx.claims.abandon(task_id)
        ctx.lanes.abandon(run.permits)
        if isinstance(e, RedisOutage):
            # Not acked as a failure (the messages would wait for REDISPATCH_AFTER): back
            # to the queue, to run again once Redis is back.
            log.error("job %s: task %s could not record its outcomes (%s); requeued", job_id,
                      task_id, e)
            raise Reject(str(e), requeue=True) from e
        raise
    return acks.SETTLED if acked else None


def _task_messages(job_id: str, messages: list[dict[str, Any]]) -> list[TaskMessage]:
    parsed = []
    for args in messages:
        try:
            parsed.append(TaskMessage.from_args(args))
        except ValueError as e:  # not ours: nothing to record it against
            log.error("job %s: dropping a malformed task message: %s", job_id, e)
    return parsed
