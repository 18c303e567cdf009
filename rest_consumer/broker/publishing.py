"""``deliver`` tasks onto the broker: Celery's own message, rendered once per queue.

``send_task`` cost a reader about 0.3 ms of CPU per task (configuration lookups, routing,
two JSON encodings, kombu's publish machinery): most of its CPU with one message per task
(bench/, ``--profile reader:batch1``). Two ``deliver`` tasks on one queue differ only in
their id, their arguments and the arguments' repr, and kombu's delivery tag. So Celery
renders one message per queue (its real ``send_task``, collected by ``broker`` instead of
sent), and each task is that message with those fields replaced; a test compares the result
with ``send_task``'s own, field by field, so a Celery that adds a per-task field fails it.

Celery's publish signals (``before_task_publish``, ``after_task_publish``) are not sent:
rest-consumer uses none. A broker the project's transport does not cover (another scheme), or
``FAST_TRANSPORT=false``, gets Celery's plain ``send_task`` for each task.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from typing import Any

from celery import Celery

from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.broker.transport import Rendered

TASK = "rest_consumer.deliver"
"""The task's registered name (``tasks.deliver``)."""
PUSHES_PER_ROUND_TRIP = 1000
"""As kombu's publish batch: a round trip per thousand tasks at most."""

_TEMPLATE_ID = "00000000-0000-4000-8000-00000000c0de"
_TEMPLATE_REPR = "rest-consumer template argsrepr"

Outgoing = tuple[tuple[Any, ...], str]
"""A task to publish: its arguments and their repr (what Flower shows)."""


class Template:
    """One queue's message as Celery rendered it; ``render`` makes each task from it."""

    def __init__(self, key: str, message: dict[str, Any]) -> None:
        self.key = key
        """The Redis list the message goes on (kombu's key for the queue)."""
        self.headers: dict[str, Any] = message["headers"]
        self.properties: dict[str, Any] = message["properties"]
        self.rest = {k: v for k, v in message.items()
                     if k not in ("headers", "properties", "body")}
        if self.properties.get("body_encoding") != "base64" or (
                message.get("content-type") != "application/json"):
            raise ValueError(f"not a JSON, base64 message: {self.properties}, {self.rest}")
        _args, *self.tail = json.loads(base64.b64decode(message["body"]))
        self.ids = _fields_holding(message, _TEMPLATE_ID)
        self.reprs = _fields_holding(message, _TEMPLATE_REPR)

    def replaced(self) -> set[tuple[str, str]]:
        """The fields ``render`` writes, besides the body: (headers or properties, name)."""
        return {*self.ids, *self.reprs, ("properties", "delivery_tag")}

    def render(self, task_id: str, args: tuple[Any, ...], argsrepr: str) -> str:
        """The message of task ``task_id``, as Celery would have written it."""
        headers, properties = dict(self.headers), dict(self.properties)
        for fields, value in ((self.ids, task_id), (self.reprs, argsrepr)):
            for part, name in fields:
                (headers if part == "headers" else properties)[name] = value
        # kombu's key for the unacked record: the task id, so the task can remove it (acks)
        properties["delivery_tag"] = task_id
        body = base64.b64encode(json.dumps([list(args), *self.tail]).encode()).decode()
        return json.dumps({**self.rest, "body": body, "headers": headers,
                           "properties": properties})


def _fields_holding(message: dict[str, Any], value: str) -> list[tuple[str, str]]:
    """Where ``value`` appears, as (headers or properties, field name); anywhere else (a
    nested field, the envelope) would not be replaced, so it is refused."""
    fields = [(part, name) for part in ("headers", "properties")
              for name, held in message[part].items() if held == value]
    envelope = json.dumps({k: v for k, v in message.items() if k != "body"})
    if not fields or envelope.count(json.dumps(value)) != len(fields):
        raise ValueError(f"Celery's message holds {value!r} where it cannot be replaced")
    return fields


class TaskPublisher:
    """Publishes ``deliver`` tasks, all of one call in one round trip per thousand."""

    def __init__(self, app: Celery, *, fast: bool = True) -> None:
        self.app = app
        self.fast = fast
        """False: every task through Celery's public ``send_task``, nothing private."""
        self.templates: dict[str, Template] = {}
        """Each queue's template, rendered at its first publish."""
        self._lock = threading.Lock()

    def publish(self, queue: str, tasks: list[Outgoing]) -> list[str]:
        """Push ``tasks`` on ``queue``; returns their ids. Raises when the broker cannot be
        reached."""
        with self.app.producer_or_acquire() as producer:
            channel = producer.channel
            if not self.fast or not hasattr(channel, "rendering"):  # not the project's transport
                return self._send_plainly(producer, queue, tasks)
            template = self._template(producer, queue)
            ids = [str(uuid.uuid4()) for _ in tasks]
            with channel.conn_or_acquire() as client:
                for start in range(0, len(tasks), PUSHES_PER_ROUND_TRIP):
                    trip = RoundTrip(client)
                    for task_id, (args, argsrepr) in zip(
                            ids[start:start + PUSHES_PER_ROUND_TRIP],
                            tasks[start:start + PUSHES_PER_ROUND_TRIP], strict=True):
                        trip.execute_command("LPUSH", template.key,
                                             template.render(task_id, args, argsrepr))
                    trip.execute()
            return ids

    def _template(self, producer: Any, queue: str) -> Template:
        with self._lock:
            if queue not in self.templates:
                with producer.channel.rendering() as rendered:
                    self.app.send_task(TASK, (), queue=queue, argsrepr=_TEMPLATE_REPR,
                                       kwargsrepr="{}", producer=producer, declare=NO_DECLARE,
                                       task_id=_TEMPLATE_ID)
                self.templates[queue] = _only(rendered)
            return self.templates[queue]

    def _send_plainly(self, producer: Any, queue: str, tasks: list[Outgoing]) -> list[str]:
        return [self.app.send_task(TASK, args, queue=queue, argsrepr=argsrepr, kwargsrepr="{}",
                                   producer=producer).id for args, argsrepr in tasks]


def _only(rendered: Rendered) -> Template:
    if len(rendered) != 1:
        raise RuntimeError(f"rendering one task gave {len(rendered)} messages")
    return Template(*rendered[0])


NO_DECLARE: list[Any] = []
"""Celery declares a task's queue at every publish, binding a copy of it to the channel: a
fifth of the reader's CPU with one message per task. On Redis a direct queue needs no
declaration to receive (the message is pushed on the list of its name, and the workers
declare the queues they consume), so ``deliver`` tasks are published without one."""
