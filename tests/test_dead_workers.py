"""A dead worker's tasks come back in seconds (real Redis, kombu's real restore; end to end
with real workers, one SIGKILLed, and a visibility timeout far out of reach)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pipeline import Pipeline
from test_pipeline import json_values, simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.broker import acks, holders
from rest_consumer.broker.celery_app import create_celery
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.config import Settings
from rest_consumer.devtools.services import RedisServer
from rest_consumer.state import keys
from rest_consumer.state.store import JobStore
from rest_consumer.worker.claims import TaskClaims
from rest_consumer.worker.dead_workers import ALIVE_SECONDS, DeadWorkers


@pytest.fixture(autouse=True)
def not_a_worker_after_the_test() -> Iterator[None]:
    yield
    holders.end()


class Restores:
    """What a watch asked to put back."""

    def __init__(self) -> None:
        self.tags: list[str] = []

    def __call__(self, tags: list[str]) -> None:
        self.tags += tags


def dead_worker(client: redis.Redis, name: str, tags: list[str]) -> None:
    """A worker that filed ``tags`` and died: in the set of workers, no alive mark."""
    client.sadd(keys.WORKERS, name)
    client.sadd(keys.worker_held(name), *tags)


def test_a_dead_workers_tasks_are_put_back_but_those_a_run_still_holds(
        real_redis: redis.Redis) -> None:
    # Given a dead worker that held three tasks: one claimed by a living run, one done, one
    # never started; and a live worker holding one
    dead_worker(real_redis, "dead", ["t-running", "t-done", "t-waiting"])
    real_redis.set(keys.task_claim("t-running"), "running:abc", px=10_000)
    real_redis.set(keys.task_claim("t-done"), "done")
    real_redis.sadd(keys.WORKERS, "alive")
    real_redis.set(keys.worker_alive("alive"), 1)
    real_redis.sadd(keys.worker_held("alive"), "t-alive")
    restores = Restores()
    # When a third worker beats
    DeadWorkers(real_redis, "me", restores, TaskClaims.running, settle_seconds=0).beat()
    # Then the dead one's tasks no run holds go back, its file is gone, the live one is untouched
    assert sorted(restores.tags) == ["t-done", "t-waiting"]
    assert not real_redis.exists(keys.worker_held("dead"))
    assert real_redis.smembers(keys.WORKERS) == {b"alive", b"me"}
    assert real_redis.smembers(keys.worker_held("alive")) == {b"t-alive"}
    assert 0 < real_redis.ttl(keys.worker_alive("me")) <= ALIVE_SECONDS


def test_one_worker_takes_a_dead_workers_file(real_redis: redis.Redis) -> None:
    dead_worker(real_redis, "dead", ["t1", "t2"])
    first, second = Restores(), Restores()
    one = DeadWorkers(real_redis, "one", first, TaskClaims.running, settle_seconds=0)
    two = DeadWorkers(real_redis, "two", second, TaskClaims.running, settle_seconds=0)
    one.beat()
    two.beat()
    assert sorted(first.tags) == ["t1", "t2"] and second.tags == []
    # a worker that stops cleanly leaves no file or mark for a peer to take
    one.stop()
    two.beat()
    assert second.tags == [] and real_redis.smembers(keys.WORKERS) == {b"two"}


def test_a_failed_restore_leaves_the_file_for_the_next_look(real_redis: redis.Redis) -> None:
    dead_worker(real_redis, "dead", ["t1"])

    def refused(tags: list[str]) -> None:
        raise redis.ConnectionError("Redis went away")

    with pytest.raises(redis.ConnectionError):
        DeadWorkers(real_redis, "me", refused, TaskClaims.running, settle_seconds=0).beat()
    assert real_redis.sismember(keys.WORKERS, "dead")
    assert real_redis.smembers(keys.worker_held("dead")) == {b"t1"}


def test_a_worker_judges_others_only_once_its_own_beats_have_gone_through_a_while(
        real_redis: redis.Redis) -> None:
    # Given a worker back from a Redis outage, whose peers' marks lapsed meanwhile
    dead_worker(real_redis, "peer", ["t1"])
    restores = Restores()
    watch = DeadWorkers(real_redis, "me", restores, TaskClaims.running, settle_seconds=0.3)
    # When it beats at once, the peer is not judged (it may not have renewed yet)
    watch.beat()
    assert restores.tags == [] and real_redis.sismember(keys.WORKERS, "peer")
    # Then, the peer having renewed its mark by then, it is alive
    real_redis.set(keys.worker_alive("peer"), 1)
    time.sleep(0.35)
    watch.beat()
    assert restores.tags == []
    # and one that did not renew is dead
    real_redis.delete(keys.worker_alive("peer"))
    watch.beat()
    assert restores.tags == ["t1"]


def test_on_reconnecting_a_worker_keeps_what_its_pool_runs(real_redis: redis.Redis) -> None:
    real_redis.sadd(keys.worker_held("me"), "t-active", "t-claimed", "t-dropped")
    real_redis.set(keys.task_claim("t-claimed"), "running:x")
    restores = Restores()
    DeadWorkers(real_redis, "me", restores, TaskClaims.running).take_back_own({"t-active"})
    assert restores.tags == ["t-dropped"]


def test_a_worker_files_what_it_reserves_and_kombus_restore_puts_it_back(
        redis_url: str, real_redis: redis.Redis) -> None:
    # Given a worker's incarnation, reserving two messages through the project's transport
    me = holders.begin("w1@test")
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("holders-test")
        queue.put({"n": 1})
        queue.put({"n": 2})
        first, second = queue.get(timeout=5), queue.get(timeout=5)
        held = keys.worker_held(me)
        # Then both tags are filed under it, in the transaction of kombu's record
        assert real_redis.smembers(held) == {first.delivery_tag.encode(),
                                             second.delivery_tag.encode()}
        # An ack takes a tag out; so does a task's own settling (``acks``)
        first.ack()
        trip = RoundTrip(real_redis)
        acks.queue(trip, second.delivery_tag)
        assert acks.settled(trip.execute())
        assert real_redis.scard(held) == 0
        # and a dead worker's tag goes back to its queue through kombu's restore
        queue.put({"n": 3})
        third = queue.get(timeout=5)
        assert real_redis.sismember(held, third.delivery_tag)
        conn.default_channel.qos.restore_by_tag(third.delivery_tag)
        assert real_redis.llen("holders-test") == 1 and real_redis.scard(held) == 0
        assert queue.get(timeout=5).payload == {"n": 3}
        queue.close()


def test_elsewhere_nothing_is_filed(redis_url: str, real_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("holders-none")
        queue.put({"n": 1})
        queue.get(timeout=5).ack()
        queue.close()
    assert not real_redis.keys("worker:*")


def test_a_sigkilled_workers_tasks_run_elsewhere_in_seconds(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given two workers, a slow endpoint, and kombu's sweep and the readers' fallbacks out
    # of reach (a visibility timeout of 300 s)
    topic = "dead.worker"
    pipeline.create_topic(topic, partitions=2)
    pipeline.env.update({"VISIBILITY_TIMEOUT": "300", "REDISPATCH_AFTER": "600"})
    endpoint.delay = 0.05
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic,
                                                                concurrency=4))
    pipeline.start_worker("worker1")
    pipeline.start_worker("worker2")
    pipeline.start_reader()
    pipeline.produce(topic, json_values(300))
    wait_for(lambda: len(endpoint.keys()) >= 30, 60, what="deliveries to start")
    held = _held_by(real_redis, pipeline.procs["worker1"].pid)
    wait_for(lambda: real_redis.scard(held) > 0, 30, what="worker1 holding tasks")
    # When one worker is SIGKILLed holding tasks
    pipeline.kill("worker1")
    killed = time.monotonic()
    # Then the other runs them once its mark lapses (ALIVE_SECONDS), not after 300 s
    wait_for(lambda: len(endpoint.keys()) == 300, ALIVE_SECONDS + 45, interval=0.5,
             what="all 300 delivered")
    assert time.monotonic() - killed < ALIVE_SECONDS + 45
    assert "put back in their queues" in pipeline.log("worker2")


def _held_by(client: redis.Redis, pid: int) -> str:
    """The file of the worker whose main process is ``pid`` (``node:pid:random``)."""
    wait_for(lambda: any(f":{pid}:" in bytes(m).decode() for m in client.smembers(keys.WORKERS)),
             30, what=f"worker {pid}'s alive mark")
    return next(keys.worker_held(name) for m in client.smembers(keys.WORKERS)
                if f":{pid}:" in (name := bytes(m).decode()))



def test_tasks_dropped_from_a_workers_buffer_as_redis_restarts_run_in_seconds(
        kafka_bootstrap: str, endpoint: Any, tmp_path: Path) -> None:
    # Given a Redis of this test's own (AOF), one worker process running one task and holding
    # three more in its buffer (prefetch 4), and the visibility timeout far out of reach
    server = RedisServer(tmp_path / "redis")
    server.start()
    pipeline = Pipeline(server.url, kafka_bootstrap, tmp_path)
    client = redis.Redis.from_url(server.url)
    try:
        topic = "restart.redis"
        pipeline.create_topic(topic)
        pipeline.env.update({"VISIBILITY_TIMEOUT": "300", "REDISPATCH_AFTER": "600"})
        endpoint.delay = 2.0
        JobStore(client, LOOPBACK).upsert("people", simple_job(endpoint, topic, batch_size=1,
                                                                concurrency=1))
        pipeline.start_worker("worker", "-c", "1")
        pipeline.start_reader()
        pipeline.produce(topic, json_values(8))
        # (the fourth reserved fills the buffer: no BRPOP is out when Redis dies)
        wait_for(lambda: client.hlen(keys.KOMBU_UNACKED) == 4, 60, what="four tasks held")
        time.sleep(1.1)  # AOF everysec has them
        # When Redis is SIGKILLed and restarted: Celery drops its buffer as it reconnects
        server.kill()
        time.sleep(1)
        server.start()
        # Then the worker puts the dropped tasks back at once, and all eight arrive in
        # seconds (eight 2 s requests one at a time, after the restart)
        wait_for(lambda: len(endpoint.keys()) == 8, 60, interval=0.5, what="all 8 delivered")
        assert "dropped from its buffer put back in their queues" in pipeline.log("worker")
    finally:
        pipeline.stop_all()
        client.close()
        server.stop()
