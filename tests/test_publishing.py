"""Publishing ``deliver`` tasks from Celery's own rendered message (real Redis)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import Celery

from rest_consumer.broker.celery_app import create_celery
from rest_consumer.broker.publishing import NO_DECLARE, TASK, TaskPublisher, Template
from rest_consumer.core.config import Settings

ARGS = ("people", "hash1", [{"t": "aether.people", "p": 2, "o": 41, "v": "e30="}])


def pushed(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def decoded(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its body decoded, and without kombu's per-publish delivery tag."""
    properties = {k: v for k, v in message["properties"].items() if k != "delivery_tag"}
    return {**message, "body": json.loads(base64.b64decode(message["body"])),
            "properties": properties}


def test_a_task_is_the_message_send_task_writes(redis_url: str,
                                                real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    TaskPublisher(app).publish("pub-ours", [(ARGS, "job=people aether.people[2]@41")])
    [ours] = pushed(real_redis, "pub-ours")
    app.send_task(TASK, ARGS, queue="pub-ours", argsrepr="job=people aether.people[2]@41",
                  kwargsrepr="{}", declare=NO_DECLARE, task_id=ours["headers"]["id"])
    celerys, _ = pushed(real_redis, "pub-ours")  # LPUSH: the newest first
    assert decoded(ours) == decoded(celerys)
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]


def test_every_task_has_its_own_id_and_delivery_tag(redis_url: str,
                                                   real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    publisher = TaskPublisher(app)
    publisher.publish("pub-many", [(("j", "h", [{"o": n}]), f"#{n}") for n in range(3)])
    publisher.publish("pub-many", [(("j", "h", [{"o": 3}]), "#3")])  # the template reused
    messages = pushed(real_redis, "pub-many")[::-1]
    assert [m["headers"]["argsrepr"] for m in messages] == ["#0", "#1", "#2", "#3"]
    assert [decoded(m)["body"][0] for m in messages] == [
        ["j", "h", [{"o": n}]] for n in range(4)]
    ids = {m["headers"]["id"] for m in messages}
    assert len(ids) == 4 and ids == {m["properties"]["correlation_id"] for m in messages}
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 4
    assert {m["properties"]["delivery_info"]["routing_key"] for m in messages} == {"pub-many"}


def test_two_send_task_messages_differ_only_where_the_template_replaces(
        redis_url: str, real_redis: redis.Redis) -> None:
    """A Celery that added another per-task field would fail here, not in production."""
    app = create_celery(Settings(redis_url=redis_url))
    publisher = TaskPublisher(app)
    publisher.publish("pub-diff", [(ARGS, "a")])
    replaced = publisher.templates["pub-diff"].replaced()
    real_redis.delete("pub-diff")
    for n in range(2):
        app.send_task(TASK, ("j", "h", [{"o": n}]), queue="pub-diff", argsrepr=f"#{n}",
                      kwargsrepr="{}", declare=NO_DECLARE)
    first, second = pushed(real_redis, "pub-diff")
    differing = {(part, name) for part in ("headers", "properties")
                 for name in first[part] | second[part]
                 if first[part].get(name) != second[part].get(name)}
    assert differing <= replaced
    assert {k: v for k, v in first.items() if k not in ("headers", "properties", "body")} == {
        k: v for k, v in second.items() if k not in ("headers", "properties", "body")}


def test_a_message_holding_the_id_where_it_cannot_be_replaced_is_refused() -> None:
    message = {"body": base64.b64encode(b"[[], {}, {}]").decode(),
               "content-type": "application/json",
               "headers": {"id": "00000000-0000-4000-8000-00000000c0de",
                           "nested": {"root": "00000000-0000-4000-8000-00000000c0de"},
                           "argsrepr": "rest-consumer template argsrepr"},
               "properties": {"body_encoding": "base64"}}
    with pytest.raises(ValueError, match="cannot be replaced"):
        Template("q", message)


def test_another_transport_gets_send_task_for_each_task() -> None:
    app = Celery("memory-test", broker="memory://", set_as_current=False)
    TaskPublisher(app).publish("pub-memory", [(ARGS, "a"), (ARGS, "b")])
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("pub-memory")
        got = [queue.get(timeout=1) for _ in range(2)]
        assert sorted(m.headers["argsrepr"] for m in got) == ["a", "b"]
        queue.close()
