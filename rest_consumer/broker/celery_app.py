"""The Celery app as every process configures it, and the functions that publish ``deliver``.

The reader and the API publish tasks with these; only the worker (``worker.task``) registers
the task itself, so publishing never imports the worker's stack.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from rest_consumer.broker.publishing import TASK, Outgoing, TaskPublisher
from rest_consumer.broker.transport import transport_for
from rest_consumer.core.config import DEFAULT_QUEUE, Settings
from rest_consumer.core.messages import Dispatcher, TaskMessage
from rest_consumer.state.retries import Publisher, Retry

__all__ = ["TASK", "create_celery", "describe", "make_dispatcher", "make_retry_publisher"]


def create_celery(settings: Settings) -> Celery:
    """The Celery app, configured for at-least-once delivery on Redis (DESIGN §8)."""
    app = Celery("rest_consumer", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url(),
        broker_transport=(transport_for(settings.broker_url()) if settings.fast_transport
                          else None),
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
        # The sweep's lock: a worker killed while sweeping held it for kombu's 300 s, and no
        # dead worker's task came back meanwhile. Sweeps that overlap are safe (each restore
        # is a WATCHed transaction that finds the record gone).
        "unacked_mutex_expire": max(10, int(visibility / 4)),
        # A broker that vanishes without closing the connection must not hang a publish.
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "socket_keepalive": True,
        "health_check_interval": 25,
        # sentinel:// broker URLs (redisconn): the group whose master is the broker
        "master_name": settings.redis_sentinel_master,
    }


def describe(job_id: str, messages: list[TaskMessage]) -> str:
    """What Flower shows for a task: ``job=<id> <topic>[<partition>]@<offset>``."""
    text = f"job={job_id} {messages[0].describe()}"
    if len(messages) > 1:
        text += f" +{len(messages) - 1} more"
    return text


def make_dispatcher(celery_app: Celery) -> Dispatcher:
    """A function sending one ``deliver`` task per group of messages, on the job's queue,
    all of one call in one round trip (``publishing``)."""
    publisher = TaskPublisher(celery_app, fast=_fast(celery_app))

    def dispatch(job: dict[str, Any], groups: list[list[TaskMessage]]) -> list[str]:
        return publisher.publish(job.get("queue") or DEFAULT_QUEUE, [
            ((job["id"], job["hash"], [m.to_args() for m in messages]),
             describe(job["id"], messages)) for messages in groups])

    return dispatch


def make_retry_publisher(celery_app: Celery) -> Publisher:
    """A function sending due retries as ``deliver`` tasks, a round trip per queue."""
    publisher = TaskPublisher(celery_app, fast=_fast(celery_app))

    def publish(retries: list[Retry]) -> None:
        by_queue: dict[str, list[Outgoing]] = {}
        for retry in retries:
            by_queue.setdefault(retry.queue or DEFAULT_QUEUE, []).append(
                ((retry.job_id, retry.job_hash, [retry.message.to_args()]),
                 describe(retry.job_id, [retry.message])))
        for queue, tasks in by_queue.items():
            publisher.publish(queue, tasks)

    return publish


def _fast(celery_app: Celery) -> bool:
    settings = getattr(celery_app, "rest_consumer_settings", None)
    return settings is None or bool(settings.fast_transport)
