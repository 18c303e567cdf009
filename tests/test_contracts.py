"""Contracts: every private API of a dependency the fast path leans on, pinned by name.

When an upgrade breaks one of these, the test named after it fails here, and
``FAST_TRANSPORT=false`` is the users' way back to Celery's and kombu's public paths while it is
mended. Pinned here or in the module's own tests (named below):

- ``broker.acks.Request``: Celery hands ``Request.on_success`` the repr of the task's return
  value: ``test_celery_request_on_success_gets_the_repr_of_the_return_value``.
- ``broker.transport``: kombu's Channel ``_create_client`` and ``conn_or_acquire``:
  ``test_kombu_channel_builds_clients_and_yields_the_one_it_is_given``; its ``_put``,
  ``_get_message_priority`` and ``_q_for_pri``:
  ``test_kombu_put_pushes_on_the_list_q_for_pri_names``;
  its QoS ``ack`` as ``virtual.QoS.ack`` plus the Redis removal:
  ``test_broker.test_a_message_whose_task_removed_its_record_is_acked_without_redis``.
- ``state.keys`` and ``broker.acks``: kombu's ``unacked`` hash and ``unacked_index``:
  ``test_kombu_records_a_reserved_message_under_its_tag_in_unacked``.
- ``broker.transport`` (``holders``): kombu's QoS ``append`` writes ``[message._raw, exchange,
  routing key]``, and its ack, reject and restore all go through ``_remove_from_indices``:
  ``test_kombu_qos_records_raw_exchange_and_routing_key_and_removes_in_one_place``.
- ``worker.dead_workers``: Celery restarts a consumer's bootsteps when it reconnects to its
  broker, and drops its prefetch buffer:
  ``test_dead_workers.test_tasks_dropped_from_a_workers_buffer_as_redis_restarts_run_in_seconds``.
- ``broker.publishing``: ``send_task(declare=[])`` declares nothing:
  ``test_celery_send_task_with_an_empty_declare_list_binds_nothing``; Celery's rendered message:
  ``test_publishing.test_two_send_task_messages_differ_only_where_the_template_replaces``.
- ``broker.roundtrip``: redis-py's ``CoreCommands`` build commands through
  ``execute_command``: ``test_redis_py_command_methods_go_through_execute_command``.
- ``core.decoding``: ``fastavro._read_py.schemaless_reader``:
  ``test_fastavro_python_reader_reads_a_record_with_the_writer_schema``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from fastavro._read_py import schemaless_reader
from kombu.transport import redis as kombu_redis

from helpers import wait_for
from rest_consumer.broker import acks, transport
from rest_consumer.broker.celery_app import create_celery
from rest_consumer.broker.publishing import NO_DECLARE, TASK, TaskPublisher
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.config import Settings
from rest_consumer.state import keys


def test_celery_request_on_success_gets_the_repr_of_the_return_value(
        redis_url: str, real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a task of acks.Request's class that removes its own unacked record, as deliver
    # does, and returns SETTLED; and the channel's QoS watched
    app = create_celery(Settings(redis_url=redis_url))
    noted: list[str] = []
    settled = transport.QoS.settled
    monkeypatch.setattr(transport.QoS, "settled",
                        lambda qos, tag: (noted.append(tag), settled(qos, tag))[1])
    tags: list[str] = []

    @app.task(name=TASK, acks_late=True, bind=True, Request=acks.Request)
    def settles(task: Any, *_: Any) -> str | None:
        tags.append(task.request.id)  # published by TaskPublisher: the id is kombu's tag
        trip = RoundTrip(real_redis)
        acks.queue(trip, tags[-1])
        return acks.SETTLED if acks.settled(trip.execute()) else None

    # When a real worker (solo pool: the same return path as prefork) runs it
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      queues=["contract-acks"], shutdown_timeout=10):
        TaskPublisher(app).publish("contract-acks", [(("job", "hash", []), "contract")])
        wait_for(lambda: bool(noted), 20, what="the request telling the QoS")
    # Then Request.on_success recognised SETTLED in what the pool handed back, and the ack
    # left nothing in Redis
    assert noted == tags and len(tags) == 1
    assert real_redis.hlen(keys.KOMBU_UNACKED) == 0


def test_kombu_channel_builds_clients_and_yields_the_one_it_is_given(redis_url: str) -> None:
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, kombu_redis.Channel)
        client = channel._create_client()
        assert isinstance(client, redis.Redis)
        assert client.connection_pool is channel.pool
        given = object()
        with channel.conn_or_acquire(given) as chosen:
            assert chosen is given


def test_kombu_put_pushes_on_the_list_q_for_pri_names(redis_url: str,
                                                       real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        message = {"body": "x", "properties": {"priority": 3}}
        priority = channel._get_message_priority(message, reverse=False)
        key = channel._q_for_pri("contract-put", priority)
        channel._put("contract-put", message)
    assert json.loads(real_redis.lpop(key) or b"null") == message  # type: ignore[arg-type]


def test_kombu_records_a_reserved_message_under_its_tag_in_unacked(
        redis_url: str, real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("contract-unacked")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert real_redis.hexists(keys.KOMBU_UNACKED, message.delivery_tag)
        assert real_redis.zscore(keys.KOMBU_UNACKED_INDEX, message.delivery_tag) is not None
        message.ack()
        assert not real_redis.hexists(keys.KOMBU_UNACKED, message.delivery_tag)
        queue.close()


def test_kombu_qos_records_raw_exchange_and_routing_key_and_removes_in_one_place(
        redis_url: str, real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    original = kombu_redis.QoS._remove_from_indices

    def noting(self: Any, tag: str, pipe: Any = None) -> Any:
        removed.append(tag)
        return original(self, tag, pipe)

    monkeypatch.setattr(kombu_redis.QoS, "_remove_from_indices", noting)
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("contract-qos")
        for n in (1, 2, 3):
            queue.put({"n": n})
        first = queue.get(timeout=5)
        record = json.loads(real_redis.hget(keys.KOMBU_UNACKED, first.delivery_tag) or b"null")
        assert record == [first._raw, first.delivery_info["exchange"],
                          first.delivery_info["routing_key"]]
        first.ack()
        second = queue.get(timeout=5)
        second.reject(requeue=True)
        third = queue.get(timeout=5)
        conn.default_channel.qos.restore_by_tag(third.delivery_tag)
        assert removed == [first.delivery_tag, second.delivery_tag, third.delivery_tag]
        queue.close()


def test_celery_send_task_with_an_empty_declare_list_binds_nothing(
        redis_url: str, real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    with app.producer_or_acquire() as producer:
        app.send_task("contract.nothing", (), queue="contract-undeclared", producer=producer,
                      declare=NO_DECLARE)
    assert real_redis.llen("contract-undeclared") == 1
    assert not real_redis.exists("_kombu.binding.contract-undeclared")


def test_redis_py_command_methods_go_through_execute_command() -> None:
    trip = RoundTrip(redis.Redis())  # nothing is sent: commands are only queued
    trip.hset("h", "f", "v")
    trip.zrem("z", "a")
    trip.set("k", "v", px=100, nx=True)
    assert trip.commands == [("HSET", "h", "f", "v"), ("ZREM", "z", "a"),
                             ("SET", "k", "v", "NX", "PX", 100)]


def test_fastavro_python_reader_reads_a_record_with_the_writer_schema() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]}]})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, {"id": "p-1", "n": 7})
    out.seek(0)
    assert schemaless_reader(out, schema, None) == {"id": "p-1", "n": 7}
