"""One run per task id: a premature redelivery sends nothing twice (real Redis; end to end
with a real worker, the same task sent twice as the broker would redeliver it)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from test_pipeline import json_values, simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.broker.celery_app import create_celery
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.config import Settings
from rest_consumer.core.messages import TaskMessage
from rest_consumer.state.store import JobStore
from rest_consumer.worker import claims
from rest_consumer.worker.claims import TaskClaims


@pytest.fixture(autouse=True)
def stopped_after_the_test() -> Iterator[None]:
    """Every TaskClaims a test makes stops renewing when the test ends (its Redis may not
    outlive the session, and a renewer that cannot reach it says so)."""
    yield
    while MADE:
        MADE.pop().leases.stop()


MADE: list[TaskClaims] = []


def claims_of(client: redis.Redis) -> TaskClaims:
    MADE.append(TaskClaims(client, 60))
    return MADE[-1]


def claim(claims_: TaskClaims, task_id: str) -> bool:
    trip = RoundTrip(claims_.redis)
    lease = claims_.queue_claim(trip, task_id)
    return claims_.claimed(task_id, lease, trip.execute()[-1])


def test_a_task_id_is_claimed_once_then_done(real_redis: redis.Redis) -> None:
    first, second = claims_of(real_redis), claims_of(real_redis)
    assert claim(first, "t1")
    assert not claim(second, "t1")  # running elsewhere
    pipe = real_redis.pipeline()
    first.finish("t1", pipe)
    pipe.execute()
    assert not claim(second, "t1")  # done: a late copy has nothing to do
    assert 0 < real_redis.ttl("claim:t1") <= 60


def test_an_abandoned_run_lets_the_redelivered_copy_run(real_redis: redis.Redis) -> None:
    first, second = claims_of(real_redis), claims_of(real_redis)
    assert claim(first, "t2")
    first.abandon("t2")
    assert claim(second, "t2")


def test_a_live_run_keeps_its_claim_and_a_dead_ones_lapses(
        real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "LEASE_SECONDS", 0.6)
    monkeypatch.setattr(claims, "RENEW_EVERY_SECONDS", 0.1)
    alive, other = claims_of(real_redis), claims_of(real_redis)
    assert claim(alive, "t3")
    time.sleep(1.5)  # beyond the lease: renewed by the living worker's thread
    assert not claim(other, "t3")
    alive.leases.stop()  # the worker dies: nobody renews
    time.sleep(1.0)
    assert claim(other, "t3")


def test_a_task_delivered_twice_sends_its_records_once(pipeline: Any, endpoint: Any,
                                                      real_redis: redis.Redis) -> None:
    # Given a worker, and a task sent twice under one id, as a premature redelivery would be
    topic = "claims.twice"
    pipeline.create_topic(topic)
    job = JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))[0]
    pipeline.start_worker()
    celery = create_celery(Settings(redis_url=pipeline.env["REDIS_URL"]))
    message = TaskMessage(topic, 0, 0, value=json_values(1)[0])
    task_id = str(uuid.uuid4())
    for _ in range(2):
        celery.send_task("rest_consumer.deliver", ("people", job["hash"], [message.to_args()]),
                         task_id=task_id, queue="rest_consumer")
    # Then the record arrives once, and the worker says why the copy did nothing
    wait_for(lambda: "was run elsewhere" in pipeline.log("worker"), 30,
             what="the copy to be skipped")
    assert [r.path for r in endpoint.received] == ["/p/p0"]


def test_a_message_already_final_is_not_sent_again_but_a_replay_is(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given message 0 already final (its original finished after the reader had rewound)
    topic = "claims.final"
    pipeline.create_topic(topic)
    job = JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))[0]
    real_redis.zadd(f"done:people:0:{topic}", {"0": 0})
    pipeline.start_worker()
    celery = create_celery(Settings(redis_url=pipeline.env["REDIS_URL"]))
    first, second = (TaskMessage(topic, 0, i, value=json_values(1, i)[0]) for i in (0, 1))
    # When the reader sends it again in a task with message 1, and later as a replay
    celery.send_task("rest_consumer.deliver",
                     ("people", job["hash"], [first.to_args(), second.to_args()]),
                     queue="rest_consumer")
    wait_for(lambda: len(endpoint.received) == 1, 30, what="message 1")
    celery.send_task("rest_consumer.deliver",
                     ("people", job["hash"], [first.as_replay(None).to_args()]),
                     queue="rest_consumer")
    # Then only message 1 goes the first time, and the replay goes
    wait_for(lambda: len(endpoint.received) == 2, 30, what="the replay")
    assert [r.path for r in endpoint.received] == ["/p/p1", "/p/p0"]
    assert "already final elsewhere" in pipeline.log("worker")
