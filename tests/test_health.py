"""Endpoint health on real Redis: the adaptive limit, Retry-After and the circuit breaker as
the permits script keeps them, then through the real pipeline against endpoints that enforce
a capacity, go down and come back, and ask for a pause."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from test_pipeline import committed

from conftest import LOOPBACK, valid_job
from helpers import wait_for
from rest_consumer.core.config import Settings
from rest_consumer.core.errors import RetryableDeliveryError
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.records import Outcome
from rest_consumer.state import health, keys
from rest_consumer.state.health import Report
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app
from rest_consumer.worker.permits import Permits

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


def job(**fields: Any) -> CompiledJob:
    return CompiledJob({**valid_job(**fields), "hash": "h"})


def refused(n: int, status: int = 503, retry_after: float | None = None) -> Report:
    report = Report()
    for _ in range(n):
        error = RetryableDeliveryError(f"HTTP {status}", status, "", retry_after)
        report.add(Outcome(0, "retry", f"HTTP {status}", error=error, failed=True,
                           retry_after=retry_after))
    return report


def good(n: int) -> Report:
    report = Report()
    for _ in range(n):
        report.add(Outcome(0, "delivered"))
    return report


@pytest.fixture
def permits(real_redis: redis.Redis) -> Permits:
    real_redis.delete(keys.permits("people"), keys.endpoint_health("people"),
                      keys.endpoint_history("people"))
    return Permits(real_redis)


def test_refusals_bring_the_limit_down_to_what_the_endpoint_held(permits: Permits) -> None:
    default = job()
    held = permits.trade(default, [], 32, 10).tokens
    assert len(held) == 32
    # 24 of 32 requests in flight were refused: the endpoint holds 8
    verdict = permits.trade(default, held[:24], 0, 10, refused(24))
    assert health.read(permits.redis, "people")["limit"] == 8
    assert verdict.excess == 0 and verdict.in_use == 8
    assert permits.trade(default, [], 5, 10).tokens == []  # 8 in use: none more


def test_the_limit_grows_slowly_while_answers_are_good(permits: Permits) -> None:
    default = job()
    permits.trade(default, permits.trade(default, [], 10, 10).tokens, 0, 10, refused(2))
    assert health.read(permits.redis, "people")["limit"] == 8
    for _ in range(8):  # eight round trips of 8 requests, the limit used each time
        tokens = permits.trade(default, [], 8, 10).tokens
        permits.trade(default, tokens, 0, 10, good(8))
    limit = health.read(permits.redis, "people")["limit"]
    assert 9 <= limit <= 11  # about one a round trip's worth of answers x 4
    permits.trade(default, [], 0, 10, good(100))  # answers while the limit is not used
    assert health.read(permits.redis, "people")["limit"] == limit


def test_a_job_that_opts_out_keeps_its_concurrency(permits: Permits) -> None:
    fixed = job(adaptive=False, concurrency=16)
    permits.trade(fixed, permits.trade(fixed, [], 16, 10).tokens, 0, 10, refused(12))
    assert health.read(permits.redis, "people")["limit"] == 16


def test_retry_after_stops_every_new_request_until_then(permits: Permits) -> None:
    default = job()
    verdict = permits.trade(default, [], 4, 10, refused(1, 429, retry_after=2))
    assert verdict.tokens == [] and 1.5 < verdict.wait <= 2
    assert permits.trade(job(), [], 4, 10).wait > 1  # every worker sees it


def test_a_flaky_endpoint_is_not_paced_but_one_refusing_everything_is(permits: Permits) -> None:
    default = job()
    permits.trade(default, permits.trade(default, [], 2, 10).tokens, 0, 10, refused(2))
    assert health.read(permits.redis, "people")["limit"] == 1
    for _ in range(5):  # refused three times in four, at one request at a time
        for report in (refused(1), refused(1), refused(1), good(1)):
            assert permits.trade(default, [], 1, 10, report).wait == 0
    permits.trade(default, [], 0, 10, refused(1))
    time.sleep(0.3)  # nothing good for longer than PACE_AFTER: down, or nearly
    assert permits.trade(default, [], 1, 10, refused(1)).wait > 0


def test_the_breaker_opens_waits_probes_once_and_closes(permits: Permits,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MIN_WINDOW_SECONDS", 0.3)  # shortened from 2 s for the test
    breaker = job(breaker_failures=5)
    assert permits.trade(breaker, [], 0, 10, refused(5, 502)).wait == 0  # a burst is load
    time.sleep(0.55)  # failures in a row for half a second: down
    verdict = permits.trade(breaker, [], 4, 10, refused(1, 502))
    assert verdict.tokens == [] and verdict.wait > 0
    assert health.read(permits.redis, "people")["state"] == "open"
    time.sleep(0.35)
    probe = permits.trade(breaker, [], 4, 10)
    assert len(probe.tokens) == 1  # half-open: one probe
    assert permits.trade(breaker, [], 4, 10).tokens == []  # no second probe meanwhile
    after = permits.trade(breaker, probe.tokens, 4, 10, good(1))
    assert health.read(permits.redis, "people")["state"] == "closed" and after.tokens


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    """The listen backlog, set before ``listen``: with the default 5, connections a burst of
    lanes opens at once are dropped and their SYNs retried a second later, which looks like
    requests sent during a pause."""


class CapacityEndpoint:
    """Serves ``capacity`` requests at once in ``latency`` seconds and answers 503 at once
    beyond that (the district server of the issue); ``down`` answers 503 to everything;
    ``pause`` answers the next request 429 with that ``Retry-After``."""

    def __init__(self, capacity: int = 8, latency: float = 0.05) -> None:
        self.capacity, self.latency = capacity, latency
        self.active = 0
        self.down = False
        self.pause: int | None = None
        self.log: list[tuple[float, int, str]] = []  # (time answered, status, path)
        self.arrived: list[tuple[float, str]] = []  # (time the request was read, path)
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def statuses(self, since: float = 0) -> list[int]:
        return [status for at, status, _ in self.log if at >= since]

    def delivered(self) -> set[str]:
        return {path for _, status, path in self.log if status == 200}

    def _admit(self, path: str) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.arrived.append((time.time(), path))
            if self.pause is not None:
                seconds, self.pause = self.pause, None
                self.log.append((time.time(), 429, path))
                return 429, {"Retry-After": str(seconds)}
            if self.down or self.active >= self.capacity:
                self.log.append((time.time(), 503, path))
                return 503, {}
            self.active += 1
        time.sleep(self.latency)
        with self._lock:
            self.active -= 1
            self.log.append((time.time(), 200, path))
        return 200, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers = endpoint._admit(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capacity() -> Iterator[CapacityEndpoint]:
    server = CapacityEndpoint()
    yield server
    server.stop()


def start(pipeline: Any, real_redis: redis.Redis, endpoint: CapacityEndpoint, topic: str,
          n: int, **fields: Any) -> None:
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", valid_job(
        url=endpoint.url + "/p/{id}", topic=[topic], **fields))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, [json.dumps({"id": f"r{i}", "name": "n"}).encode()
                             for i in range(n)])


def api(pipeline: Any, real_redis: redis.Redis) -> Any:
    settings = Settings(api_token=AUTH["Authorization"][7:], redis_url=pipeline.env["REDIS_URL"],
                        kafka_bootstrap_servers=pipeline.kafka, destination_allowlist=LOOPBACK,
                        consumer_group_prefix=pipeline.env["CONSUMER_GROUP_PREFIX"])
    app = create_app(settings, store=JobStore(real_redis, LOOPBACK), kafka_ready=lambda: None)
    return app.test_client()


def status(pipeline: Any, real_redis: redis.Redis) -> dict[str, Any]:
    return dict(api(pipeline, real_redis).get("/job/people/status", headers=AUTH).json)


def test_the_default_job_finds_an_unknown_capacity(pipeline: Any, real_redis: redis.Redis,
                                                   capacity: CapacityEndpoint) -> None:
    start(pipeline, real_redis, capacity, "health.capacity", 600)
    wait_for(lambda: len(capacity.delivered()) == 600, 90, 0.2, "600 deliveries")
    answers = capacity.statuses()
    assert answers.count(503) <= 0.1 * len(answers), f"{answers.count(503)} of {len(answers)}"
    wait_for(lambda: status(pipeline, real_redis)["endpoint"]["refused"] == answers.count(503),
             10, 0.2, "every refusal reported")
    endpoint = status(pipeline, real_redis)["endpoint"]
    assert endpoint["state"] == "closed" and endpoint["limit"] <= 12, endpoint
    assert endpoint["history"]
    metrics = api(pipeline, real_redis).get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'rest_consumer_endpoint_state{job="people",state="closed"} 1.0' in metrics
    assert f'rest_consumer_endpoint_refused_total{{job="people"}} {answers.count(503)}.0' in (
        metrics)
    assert 'rest_consumer_endpoint_limit{job="people"}' in metrics


def test_a_dead_endpoint_gets_a_trickle_and_everything_after_it_returns(
        pipeline: Any, real_redis: redis.Redis, capacity: CapacityEndpoint) -> None:
    capacity.down = True
    start(pipeline, real_redis, capacity, "health.down", 200, max_retries=1000)
    time.sleep(3)
    opened = status(pipeline, real_redis)["endpoint"]
    assert opened["state"] in ("open", "half-open") and "503" in opened["last_error"]
    began = time.time()
    time.sleep(8)
    during = len(capacity.statuses(since=began))
    assert during <= 2 * 8, f"{during} requests in 8 s against a dead endpoint"
    capacity.down = False
    back = time.time()
    wait_for(lambda: len(capacity.delivered()) == 200, 40, 0.2, "every record after the outage")
    assert time.time() - back < 40
    wait_for(lambda: committed(real_redis), 20, what="the commit")
    assert real_redis.zcard(keys.dead_letter_index("people")) == 0
    assert status(pipeline, real_redis)["endpoint"]["state"] == "closed"
    log = pipeline.log("worker") + pipeline.log("reader")
    assert "circuit breaker closed -> open" in log and "-> closed" in log


def test_retry_after_holds_every_new_request_of_the_job(pipeline: Any,
                                                        real_redis: redis.Redis,
                                                        capacity: CapacityEndpoint) -> None:
    capacity.capacity = 64
    capacity.pause = 3
    start(pipeline, real_redis, capacity, "health.pause", 300)
    wait_for(lambda: len(capacity.delivered()) == 300, 60, 0.2, "300 deliveries")
    [asked] = [at for at, status, _ in capacity.log if status == 429]
    # What was already on its way when the answer came may still be read (on a loaded
    # machine the test server reads late): half a second of grace, then nothing new.
    held = [at - asked for at, _ in capacity.arrived if asked + 0.5 < at < asked + 2.9]
    assert held == [], f"{len(held)} requests inside the pause, at {held[:10]} s"


def test_a_job_down_longer_than_pause_after_is_stopped_with_the_reason(
        pipeline: Any, real_redis: redis.Redis, capacity: CapacityEndpoint) -> None:
    capacity.down = True
    start(pipeline, real_redis, capacity, "health.stop", 20, max_retries=1000,
          breaker_failures=5, pause_after=2)
    wait_for(lambda: status(pipeline, real_redis)["state"] == "stopped", 30, 0.5,
             "the job to stop")
    shown = status(pipeline, real_redis)
    assert "pause_after" in shown["reason"]
