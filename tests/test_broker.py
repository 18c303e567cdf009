"""The broker transport: kombu's Redis channel with one shared client (real Redis)."""

from __future__ import annotations

import json

import redis

from rest_consumer.broker import acks
from rest_consumer.broker.celery_app import create_celery, make_dispatcher
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.broker.transport import QoS, transport_for
from rest_consumer.core.config import Settings
from rest_consumer.core.messages import TaskMessage


def test_transport_follows_the_url_scheme() -> None:
    assert transport_for("redis://h:6379/0") == "rest_consumer.broker.transport:Transport"
    assert transport_for("rediss://h:6380/0") == "rest_consumer.broker.transport:Transport"
    assert transport_for("sentinel://h:26379;sentinel://g:26379") == (
        "rest_consumer.broker.transport:SentinelTransport")
    assert transport_for("memory://") is None


def test_the_switch_off_leaves_kombus_transport_and_celerys_send_task(
        redis_url: str, real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, fast_transport=False))
    assert app.conf.broker_transport is None
    make_dispatcher(app)({"id": "people", "hash": "h", "queue": "plain-switch"},
                         [[TaskMessage("t", 0, 0, value=b"{}")]])
    message = json.loads(real_redis.lpop("plain-switch") or b"null")  # type: ignore[arg-type]
    assert message["headers"]["task"] == "rest_consumer.deliver"
    # Celery's own tag, not the task id that a task of the fast path removes itself
    assert message["properties"]["delivery_tag"] != message["headers"]["id"]
    with app.connection_for_write() as conn:
        assert not isinstance(conn.default_channel.qos, QoS)


def test_a_channel_reuses_one_client_and_still_moves_messages(redis_url: str,
                                                               real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        given = object()
        with channel.conn_or_acquire(given) as chosen:
            assert chosen is given
        queue = conn.SimpleQueue("broker-test")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    assert real_redis.llen("broker-test") == 0
    assert real_redis.hlen("unacked") == 0


def test_tasks_reach_a_queue_no_worker_declared(redis_url: str,
                                                real_redis: redis.Redis) -> None:
    # Published without declaring the queue (publishing.NO_DECLARE): still on its list
    app = create_celery(Settings(redis_url=redis_url))
    dispatch = make_dispatcher(app)
    job = {"id": "people", "hash": "h", "queue": "never-declared"}
    dispatch(job, [[TaskMessage("t", 0, 0, value=b"{}")], [TaskMessage("t", 0, 1)]])
    assert real_redis.llen("never-declared") == 2
    body = json.loads(real_redis.lindex("never-declared", 0))  # type: ignore[arg-type]
    assert body["headers"]["task"] == "rest_consumer.deliver"


def test_a_reserved_message_is_recorded_as_kombu_restores_it_and_the_ack_clears_it(
        redis_url: str, real_redis: redis.Redis) -> None:
    """The unacked record and the ack go through RoundTrip: same keys and values as kombu's
    own, so a dead worker's message still comes back (kombu's restore reads them)."""
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("broker-unacked")
        queue.put({"n": 2})
        message = queue.get(timeout=5)
        tag = message.delivery_tag
        assert real_redis.zscore("unacked_index", tag) is not None
        assert isinstance(conn.default_channel.qos, QoS)
        record = json.loads(real_redis.hget("unacked", tag) or b"null")
        assert record[2] == "broker-unacked"  # [message, exchange, routing key], kombu's form
        assert real_redis.llen("broker-unacked") == 0
        conn.default_channel.qos.restore_by_tag(tag)  # what a restore of a dead worker does
        assert real_redis.llen("broker-unacked") == 1
        assert real_redis.hlen("unacked") == real_redis.zcard("unacked_index") == 0
        again = queue.get(timeout=5)
        assert again.payload == {"n": 2} and again.delivery_tag == tag
        again.ack()
        assert real_redis.hlen("unacked") == real_redis.zcard("unacked_index") == 0
        queue.close()


def test_a_message_whose_task_removed_its_record_is_acked_without_redis(
        redis_url: str, real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("broker-settled")
        queue.put({"n": 3})
        message = queue.get(timeout=5)
        qos = conn.default_channel.qos
        # The task's outcome round trip removes the record (tag = task id when we publish)
        trip = RoundTrip(real_redis)
        acks.queue(trip, message.delivery_tag)
        assert acks.settled(trip.execute())
        assert real_redis.hlen("unacked") == real_redis.zcard("unacked_index") == 0
        again = RoundTrip(real_redis)
        acks.queue(again, message.delivery_tag)
        assert not acks.settled(again.execute())  # gone: nothing to settle a second time
        # The main process is told, and its ack sends nothing to Redis
        qos.settled(message.delivery_tag)
        before = _calls(real_redis)
        message.ack()
        assert _calls(real_redis) == before
        qos._flush()  # kombu clears acked messages from its own state lazily
        assert message.delivery_tag not in qos._delivered
        queue.close()


def _calls(client: redis.Redis) -> dict[str, int]:
    """How many times each command but INFO ran (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name: int(stat["calls"]) for name, stat in stats.items() if "info" not in name}
