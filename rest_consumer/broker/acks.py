"""A ``deliver`` task acknowledges its own message, in the round trip that records its outcomes.

With late acks, kombu's Redis transport acks a task from the worker's main process once the
pool process has returned: one more synchronous round trip (MULTI, ZREM, HDEL, EXEC) in the
one process that feeds every pool process, which is what bounds a worker at one message per
task (bench/, ``per_message_vs_ceiling``). The task already ends with a round trip (its
outcomes, retries and claim), so the ack's two commands join that one, last: there is no
longer a moment when the outcomes are recorded and the message is still held, and no ack can
land without the outcomes before it. The main process only updates kombu's local state.

How the pieces meet:

- the reader publishes each task with kombu's delivery tag set to the task id
  (``publishing``), so the task knows its record in kombu's ``unacked`` hash and index;
- the task queues their removal with its outcomes (``queue``) and returns ``SETTLED`` when
  the record was there to remove (``settled``);
- ``Request``, in the main process, sees that return value and tells the channel's QoS
  (``broker.QoS.settled``), whose ack then skips Redis.

A task published otherwise (Celery's own ``send_task`` makes a random tag) finds nothing to
remove and is acked by kombu as before; so is every task when the broker is not the Redis of
``REDIS_URL`` (``CELERY_BROKER_URL`` set apart), where the task does not try.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.utils.saferepr import saferepr
from celery.worker.request import Request as CeleryRequest

from rest_consumer.broker import holders
from rest_consumer.state import keys

SETTLED = "settled"
"""What ``deliver`` returns when it acknowledged its own message."""
_SETTLED_REPR = saferepr(SETTLED)
"""What the main process receives: a pool hands back the repr of a task's return value."""


def queue(pipe: Any, task_id: str) -> None:
    """Queue the removal of the task's unacked record (kombu's keys; tag = task id), and of
    the tag from its worker's file (``holders``); ``settled`` reads the replies."""
    pipe.zrem(keys.KOMBU_UNACKED_INDEX, task_id)
    pipe.hdel(keys.KOMBU_UNACKED, task_id)
    holders.queue_released(pipe, task_id)


def settled(replies: list[Any]) -> bool:
    """Whether the commands of ``queue`` (their replies) removed the record (else kombu acks
    as before)."""
    return len(replies) in (2, 3) and replies[1] == 1


class Request(CeleryRequest):  # type: ignore[misc]
    """``deliver``'s request class: a task that returned ``SETTLED`` is acked without Redis.

    Celery subclasses a task's request class once per worker (``create_request_cls``), and
    that subclass defines its own ``on_success``; wrapping it there is the one place where a
    task's return value meets its message before the ack is scheduled."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.on_success = _noting_settled(cls.on_success)


def _noting_settled(on_success: Callable[..., Any]) -> Callable[..., Any]:
    def noting_settled(self: CeleryRequest, failed__retval__runtime: Any,
                       **kwargs: Any) -> Any:
        failed, retval, _runtime = failed__retval__runtime
        if not failed and retval == _SETTLED_REPR:
            note = getattr(self.message.channel.qos, "settled", None)
            if note is not None:  # the project's transport
                note(self.message.delivery_tag)
        return on_success(self, failed__retval__runtime, **kwargs)

    return noting_settled
