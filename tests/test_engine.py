"""The delivery engine end to end: per-job concurrency across worker processes, a container's
records sent concurrently, and adaptive batching (real Kafka, Redis, workers, endpoint)."""

from __future__ import annotations

import base64
import collections
import json
import threading
import time
from typing import Any

import pytest
import redis
from test_pipeline import committed, counters, fixture, json_values, simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.broker.celery_app import create_celery
from rest_consumer.broker.publishing import TASK
from rest_consumer.core import config
from rest_consumer.core.config import Settings
from rest_consumer.core.messages import TaskMessage
from rest_consumer.state.store import JobStore


def test_the_concurrency_bound_holds_across_two_worker_processes(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a slow endpoint and a job allowing 6 requests at once, served by two workers
    topic = "engine.bound"
    pipeline.create_topic(topic, partitions=2)
    endpoint.delay = 0.25
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, concurrency=6))
    pipeline.start_worker("worker1")
    pipeline.start_worker("worker2")
    pipeline.start_reader()
    # When a backlog of 90 messages arrives
    pipeline.produce(topic, json_values(90))
    wait_for(lambda: len(endpoint.keys()) == 90, 60, what="all deliveries")
    # Then the endpoint never saw more than 6 at once, and did see several at once
    assert 4 <= endpoint.most_concurrent <= 6, endpoint.most_concurrent
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    assert counters(real_redis)["delivered"] == 90
    assert real_redis.zcard("permits:people") == 0  # every permit given back


def test_a_500_record_container_is_sent_concurrently_and_recorded_once(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "engine.container"
    pipeline.create_topic(topic)
    endpoint.delay = 0.02
    job = simple_job(endpoint, topic)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, [fixture("person-500.avro")])
    wait_for(lambda: len(endpoint.received) >= 500, 60, what="500 deliveries")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    keys = [r.headers["Idempotency-Key"] for r in endpoint.received]
    assert sorted(keys) == sorted(f"people:{topic}:0:0:{i}" for i in range(500))
    assert endpoint.most_concurrent > 8  # sent concurrently, not one after another
    assert counters(real_redis)["delivered"] == 500


def test_a_lone_message_goes_at_once_and_a_backlog_is_packed(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a reader and no worker, so the tasks it makes wait in the queue to be seen
    topic = "engine.batching"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_reader()
    wait_for(lambda: real_redis.hlen("reader:people"), 30, what="the reader to run")
    time.sleep(2)  # the consumer has joined its group and fetches
    # When one message comes alone, it is dispatched at once, alone
    pipeline.produce(topic, json_values(1))
    began = time.monotonic()
    wait_for(lambda: real_redis.llen("rest_consumer") == 1, 5, interval=0.01,
             what="the lone message's task")
    assert time.monotonic() - began < 1.0
    # When a backlog arrives while it waits, it is packed into tasks of up to 100 messages
    pipeline.produce(topic, json_values(450, start=1))
    wait_for(lambda: counters(real_redis).get("dispatched") == 451, 30,
             what="the backlog dispatched")
    tasks = [json.loads(t) for t in real_redis.lrange("rest_consumer", 0, -1)]
    sizes = [len(json.loads(base64.b64decode(t["body"]))[0][2]) for t in tasks]
    assert sum(sizes) == 451 and max(sizes) <= 100 and len(tasks) <= 12, sizes
    pipeline.start_worker()
    wait_for(lambda: len(endpoint.keys()) == 451, 60, what="all deliveries")


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_task_acks_its_own_message_and_one_celery_published_is_acked_as_before(
        pool: str, pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    """With ``FAST_TRANSPORT=false`` (CI's second pass) kombu acks every task itself."""
    # Given a job of one message per task, and Redis watched command by command
    topic = f"engine.acks.{pool}"
    pipeline.create_topic(topic)
    job = JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic,
                                                                     batch_size=1))[0]
    removals = UnackedRemovals(real_redis)
    pipeline.start_worker("worker", "--pool", pool)
    pipeline.start_reader()
    # When the reader publishes 10 tasks, and Celery's own send_task one more (a random tag)
    pipeline.produce(topic, json_values(10))
    wait_for(lambda: len(endpoint.keys()) == 10, 60, what="10 deliveries")
    celery = create_celery(Settings(redis_url=pipeline.env["REDIS_URL"]))
    replay = TaskMessage(topic, 0, 0, value=json_values(1)[0]).as_replay(None)
    celery.send_task(TASK, ("people", job["hash"], [replay.to_args()]), queue="rest_consumer")
    wait_for(lambda: len(endpoint.received) == 11, 30, what="the replay")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    # Then nothing is held, each of the reader's tasks removed its record once, with its
    # outcomes (no ack round trip after it), and the send_task one was acked by kombu;
    # without the fast path, kombu acked each task once
    wait_for(lambda: real_redis.hlen("unacked") == real_redis.zcard("unacked_index") == 0, 10,
             what="every task acknowledged")  # the replay's ack follows its request
    seen = removals.stop()
    fast = config.from_env().fast_transport
    assert sum(seen.values()) == (12 if fast else 11), seen  # fast: 10, the replay's try + ack
    assert set(seen.values()) == {1}
    assert counters(real_redis)["delivered"] == 11


class UnackedRemovals:
    """Counts ``ZREM unacked_index <tag>`` by tag, from start to ``stop`` (Redis MONITOR)."""

    def __init__(self, client: redis.Redis) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._monitor = client.monitor()
        self._monitor.connection.send_command("MONITOR")  # from here on (as __enter__)
        self._monitor.connection.read_response()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for seen in self._monitor.listen():
                command = seen["command"].split()
                if command[:2] == ["ZREM", "unacked_index"]:
                    self.counts[command[2]] += 1
        except (redis.ConnectionError, ValueError, AttributeError):
            if not self._stopping.is_set():
                raise

    def stop(self) -> collections.Counter[str]:
        time.sleep(0.5)  # MONITOR reports a command after it ran: let the last ones arrive
        self._stopping.set()
        self._monitor.connection.disconnect()
        self._thread.join(5)
        return self.counts
