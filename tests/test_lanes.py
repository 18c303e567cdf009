"""Lanes and permits on real Redis: permits taken with the claim, a lone request sent in the
task's thread, spare permits given back, the bound held."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from conftest import valid_job
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.mapping import CompiledJob, RequestSpec
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending
from rest_consumer.worker.lanes import Lanes
from rest_consumer.worker.permits import Permits

KEY = "permits:people"
REQUEST = RequestSpec("POST", "http://127.0.0.1:9/x", {}, None, {})


@pytest.fixture
def lanes(real_redis: redis.Redis) -> Iterator[Lanes]:
    with ThreadPoolExecutor(8) as pool:
        yield Lanes(Permits(real_redis), pool)


def items(n: int) -> list[Pending]:
    return [Pending(i, TaskMessage("t", 0, i), 0, REQUEST, None) for i in range(n)]


def first_permits(lanes: Lanes, job: CompiledJob, messages: int) -> list[str]:
    trip = RoundTrip(lanes.permits.redis)
    lanes.queue_first_permits(trip, job, messages)
    return lanes.took(job, trip.execute()[-1])


def give_back(lanes: Lanes, job: CompiledJob, tokens: list[str]) -> None:
    trip = RoundTrip(lanes.permits.redis)
    lanes.give_back(trip, job, tokens)
    trip.execute()


def test_first_permits_come_with_the_claim_up_to_the_job_width(
        lanes: Lanes, real_redis: redis.Redis) -> None:
    job = CompiledJob(valid_job(concurrency=3))
    held = first_permits(lanes, job, 1)
    assert len(held) == 1
    held += first_permits(lanes, job, 100)
    assert len(held) == 3  # the job's limit
    assert first_permits(lanes, job, 5) == []
    paced = CompiledJob(valid_job(id="slow", ratelimit=1))
    one = first_permits(lanes, paced, 9)
    assert len(one) == 1
    assert real_redis.zcard(KEY) == 3
    give_back(lanes, job, held)
    give_back(lanes, paced, one)
    assert real_redis.zcard(KEY) == 0


def test_a_lone_request_goes_in_the_callers_thread_and_its_permit_back_with_the_outcomes(
        lanes: Lanes, real_redis: redis.Redis) -> None:
    job = CompiledJob(valid_job())
    held = first_permits(lanes, job, 1)
    threads = []

    def send(item: Pending) -> Outcome:
        threads.append(threading.current_thread())
        return Outcome(item.index, "delivered")

    sent, left = lanes.send_all(job, items(1), send, time.monotonic() + 10, held)
    assert [o.kind for _, o in sent] == ["delivered"]
    assert threads == [threading.current_thread()]
    assert left == held and real_redis.zcard(KEY) == 1  # still held, until the outcomes go
    give_back(lanes, job, left)
    assert real_redis.zcard(KEY) == 0


def test_spare_permits_go_back_and_the_bound_holds(lanes: Lanes,
                                                   real_redis: redis.Redis) -> None:
    job = CompiledJob(valid_job(concurrency=2))
    held = first_permits(lanes, job, 2)
    in_flight, most, lock = 0, 0, threading.Lock()

    def send(item: Pending) -> Outcome:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return Outcome(item.index, "delivered")

    sent, left = lanes.send_all(job, items(8), send, time.monotonic() + 10, held)
    assert sorted(item.position for item, _ in sent) == list(range(8))
    assert most == 2 and left == [] and real_redis.zcard(KEY) == 0


def test_permits_taken_for_records_that_were_never_sent_are_left_to_give_back(
        lanes: Lanes, real_redis: redis.Redis) -> None:
    job = CompiledJob(valid_job())
    held = first_permits(lanes, job, 3)
    sent, left = lanes.send_all(job, [], lambda item: Outcome(item.index, "delivered"),
                                time.monotonic() + 10, held)
    assert sent == [] and sorted(left) == sorted(held) and real_redis.zcard(KEY) == 3
    give_back(lanes, job, left)
