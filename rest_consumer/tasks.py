"""The Celery app and the task ``rest_consumer.deliver``.

``celery -A rest_consumer.tasks worker|flower`` works because the app lives here. Task
arguments carry the job id and hash, never a secret: workers read the job from the store.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from rest_consumer import acks, config
from rest_consumer.broker import transport_for
from rest_consumer.config import DEFAULT_QUEUE, Settings
from rest_consumer.messages import Dispatcher, TaskMessage
from rest_consumer.publishing import TASK, Outgoing, TaskPublisher
from rest_consumer.retries import Publisher, Retry
from rest_consumer.services import die_with_parent
from rest_consumer.worker import WorkerContext, deliver_messages, start_run


def create_celery(settings: Settings) -> Celery:
    """The Celery app, configured for at-least-once delivery on Redis (DESIGN §8)."""
    app = Celery("rest_consumer", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url(),
        broker_transport=transport_for(settings.broker_url()),
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # 1 would keep reserved tasks from waiting in a worker's buffer while their
        # visibility clock runs, but with Redis and late acks it delayed and, twice in CI,
        # stalled task pick-up here (celery#4378): kept at 4 until that is solved.
        worker_prefetch_multiplier=4,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=settings.worker_send_events,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        task_soft_time_limit=settings.task_time_limits()[0],
        task_time_limit=settings.task_time_limits()[1],
        redis_max_connections=64,
    )
    app.rest_consumer_settings = settings
    return app


def _transport_options(settings: Settings) -> dict[str, Any]:
    visibility = settings.visibility_timeout
    return {
        # Above a task's hard time limit, so no running task is delivered twice; a dead
        # worker's tasks come back after it (retries wait in Redis, not as ETA tasks).
        "visibility_timeout": visibility,
        # Sweep for tasks of dead workers a few times per visibility timeout (kombu's default
        # sweeps every ~100 s whatever the timeout).
        "unacked_restore_interval": max(1.0, min(60.0, visibility / 4)),
        "unacked_restore_throttle": 1,
        # A broker that vanishes without closing the connection must not hang a publish.
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "socket_keepalive": True,
        "health_check_interval": 25,
        # sentinel:// broker URLs (redisconn): the group whose master is the broker
        "master_name": settings.redis_sentinel_master,
    }


log = logging.getLogger(__name__)

app = create_celery(config.from_env())
_context: dict[str, WorkerContext] = {}


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


@app.task(name=TASK, acks_late=True, bind=True, Request=acks.Request)
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
    run = start_run(ctx, task_id, job, _task_messages(job_id, messages))
    if run is None:
        log.warning("job %s: task %s was run elsewhere (a copy redelivered while it waited "
                    "in a worker's buffer); skipped", job_id, task_id)
        return None
    try:
        acked = deliver_messages(ctx, job, run)
    except BaseException:
        ctx.claims.abandon(task_id)
        ctx.lanes.abandon(run.permits)
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


def describe(job_id: str, messages: list[TaskMessage]) -> str:
    """What Flower shows for a task: ``job=<id> <topic>[<partition>]@<offset>``."""
    text = f"job={job_id} {messages[0].describe()}"
    if len(messages) > 1:
        text += f" +{len(messages) - 1} more"
    return text


def make_dispatcher(celery_app: Celery) -> Dispatcher:
    """A function sending one ``deliver`` task per group of messages, on the job's queue,
    all of one call in one round trip (``publishing``)."""
    publisher = TaskPublisher(celery_app)

    def dispatch(job: dict[str, Any], groups: list[list[TaskMessage]]) -> None:
        publisher.publish(job.get("queue") or DEFAULT_QUEUE, [
            ((job["id"], job["hash"], [m.to_args() for m in messages]),
             describe(job["id"], messages)) for messages in groups])

    return dispatch


def make_retry_publisher(celery_app: Celery) -> Publisher:
    """A function sending due retries as ``deliver`` tasks, a round trip per queue."""
    publisher = TaskPublisher(celery_app)

    def publish(retries: list[Retry]) -> None:
        by_queue: dict[str, list[Outgoing]] = {}
        for retry in retries:
            by_queue.setdefault(retry.queue or DEFAULT_QUEUE, []).append(
                ((retry.job_id, retry.job_hash, [retry.message.to_args()]),
                 describe(retry.job_id, [retry.message])))
        for queue, tasks in by_queue.items():
            publisher.publish(queue, tasks)

    return publish
