"""End to end job operations: status, set_offset, backpressure, rate limit, batching, queues,
OAuth2 and dead-letter replay, on real Kafka, Redis, reader and worker processes."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import redis
from test_pipeline import committed, counters, json_values, kafka_committed, simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.core.config import Settings
from rest_consumer.state import heartbeat, keys, seeks
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


def api(pipeline: Any, real_redis: redis.Redis) -> Any:
    settings = Settings(redis_url=pipeline.env["REDIS_URL"], api_token="tok-0123456789abcdef",
                        destination_allowlist=LOOPBACK,
                        kafka_bootstrap_servers=pipeline.kafka,
                        consumer_group_prefix=pipeline.env["CONSUMER_GROUP_PREFIX"],
                        jobs_dir=pipeline.workdir / "jobs")
    return create_app(settings, store=JobStore.for_settings(real_redis, settings)).test_client()


def test_status_reports_partitions_lag_counters_and_state(pipeline: Any, endpoint: Any,
                                                          real_redis: redis.Redis) -> None:
    topic = "ops.status"
    pipeline.create_topic(topic, partitions=2)
    endpoint.respond = lambda request, seen: 400 if request.path == "/p/p3" else 200
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    client = api(pipeline, real_redis)
    assert client.get("/job/people/status", headers=AUTH).json["state"] == "pending"
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(10))
    try:
        wait_for(lambda: sum(kafka_committed(pipeline, topic, 2)) == 10, 60,
                 what="all committed")
    except AssertionError as e:  # (say what the reader saw)
        raise AssertionError(f"{e}; Kafka has {kafka_committed(pipeline, topic, 2)}; the "
                             f"reader reports {heartbeat.fresh_heartbeats(real_redis, 'people')}"
                             f"; done sets {_done_sets(real_redis)}\n"
                             + pipeline.log("reader")[-3000:]) from e
    # The reader commits to Kafka, then writes its heartbeat (in_flight) to Redis: wait for both
    status = wait_for(lambda: (s := client.get("/job/people/status", headers=AUTH).json)
                      and s["state"] == "running" and s["counters"]["delivered"] == 9
                      and s["in_flight"] == 0 and s, 20, what="a running status")
    assert status["counters"] == {"dispatched": 10, "delivered": 9, "retried": 0,
                                  "dead_lettered": 1, "dead_letters_lost": 0, "skipped": 0,
                                  "responses": 0, "responses_lost": 0}
    assert status["in_flight"] == 0 and status["last_error"]["reason"] == "HTTP 400"
    assert sum(p["high_watermark"] for p in status["partitions"]) == 10
    assert all(p["lag"] == 0 for p in status["partitions"])
    pipeline.stop("reader")
    stopped = client.get("/job/people/status", headers=AUTH).json
    assert stopped["state"] == "pending" and stopped["readers"] == []


def _done_sets(client: redis.Redis) -> dict[str, list[bytes]]:
    return {key.decode(): client.zrange(key, 0, -1) for key in client.scan_iter("done:*")}


def test_set_offset_while_running_and_while_stopped(pipeline: Any, endpoint: Any,
                                                    real_redis: redis.Redis) -> None:
    topic = "ops.set_offset"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    client = api(pipeline, real_redis)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(5))
    wait_for(lambda: kafka_committed(pipeline, topic) == [5], 60, what="5 committed")
    # Running: the readers seek and commit
    answer = client.post("/job/people/set_offset/earliest", headers=AUTH)
    assert answer.status_code == 202 and answer.json["applied_by"] == "readers"
    assert (answer.json["generation"], answer.json["partitions"]) == (1, [f"{topic}[0]"])
    wait_for(lambda: len(endpoint.received) == 10, 30, what="5 deliveries again")
    shown = client.get("/job/people/status", headers=AUTH).json["set_offset"]
    assert (shown["generation"], shown["state"], shown["pending_partitions"]) == (1, "applied",
                                                                                  [])
    # Stopped: the group's offsets are altered directly
    client.post("/job/people/stop", headers=AUTH)
    wait_for(lambda: not real_redis.exists(keys.reader_heartbeat("people")), 20,
             what="the reader to stop")
    wait_for(lambda: client.post("/job/people/set_offset/3", headers=AUTH).status_code == 200,
             30, what="Kafka to accept the new offsets once the group is empty")
    assert kafka_committed(pipeline, topic) == [3]
    client.post("/job/people/start", headers=AUTH)
    wait_for(lambda: len(endpoint.received) == 12, 30, what="offsets 3 and 4 again")
    assert sorted(r.path for r in endpoint.received[10:]) == ["/p/p3", "/p/p4"]
    # A request whose announcement never arrives is applied at the next reconcile, once
    wait_for(lambda: committed(real_redis, "people"), 30, what="the restarted reader")
    seeks.submit(real_redis, "people", 4, [f"{topic}[0]"])
    wait_for(lambda: len(endpoint.received) == 13, 30, what="offset 4 again, without pub/sub")
    assert endpoint.received[12].path == "/p/p4"
    wait_for(lambda: client.get("/job/people/status", headers=AUTH).json["set_offset"][
        "state"] == "applied", 10, what="the request applied")
    time.sleep(3)  # a reconcile or two later: never applied twice
    assert len(endpoint.received) == 13


def test_backpressure_bounds_redis_during_an_outage_and_loses_nothing(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given an endpoint down (503) for 12 s and a job allowed 50 messages in flight
    topic = "ops.backpressure"
    pipeline.create_topic(topic)
    outage_until = time.time() + 12
    endpoint.respond = lambda request, seen: 503 if time.time() < outage_until else 200
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, max_in_flight=50,
                                                     retry_backoff=0.5, retry_backoff_max=2,
                                                     max_retries=1000))
    pipeline.start_worker()
    pipeline.start_reader()
    baseline = real_redis.info("memory")["used_memory"]
    # When 2,000 messages are produced during the outage
    pipeline.produce(topic, json_values(2000))
    peak_in_flight = peak_memory = 0
    while time.time() < outage_until:
        peak_in_flight = max(peak_in_flight, heartbeat.in_flight(real_redis, "people"))
        peak_memory = max(peak_memory, real_redis.info("memory")["used_memory"] - baseline)
        time.sleep(0.2)
    # Then Redis holds at most about max_in_flight messages, and all arrive after recovery
    assert 0 < peak_in_flight <= 51
    assert peak_memory < 2 * 1024 * 1024, f"Redis grew by {peak_memory} bytes"
    wait_for(lambda: len(endpoint.keys()) == 2000, 120, what="all 2000 delivered")


def test_ratelimit_spaces_requests_across_two_workers(pipeline: Any, endpoint: Any,
                                                      real_redis: redis.Redis) -> None:
    topic = "ops.ratelimit"
    pipeline.create_topic(topic, partitions=2)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, ratelimit=0.2))
    pipeline.start_worker("worker1")
    pipeline.start_worker("worker2")
    wait_for(lambda: all("ready." in pipeline.log(w) for w in ("worker1", "worker2")), 30,
             what="both workers to be ready, so both get tasks")
    pipeline.start_reader()
    pipeline.produce(topic, json_values(40))
    wait_for(lambda: len(endpoint.keys()) == 40, 60, what="40 deliveries")
    times = sorted(r.at for r in endpoint.received)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Then the 40 took at least 39 slots of 0.2 s, and no two shared one. The limiter spaces
    # the slots, not the arrivals: a request sent late on a busy machine (37 ms once, in CI)
    # arrives closer to the next one, which kept its slot.
    assert times[-1] - times[0] >= 39 * 0.2 - 0.03, times
    assert min(gaps) >= 0.1, gaps
    assert "succeeded" in pipeline.log("worker1") and "succeeded" in pipeline.log("worker2")


def test_batches_pack_messages_and_keep_per_message_retries(pipeline: Any, endpoint: Any,
                                                            real_redis: redis.Redis) -> None:
    topic = "ops.batch"
    pipeline.create_topic(topic)
    endpoint.respond = lambda request, seen: 503 if request.path == "/p/p7" and not seen else 200
    pipeline.produce(topic, json_values(120))
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, batch_size=50))
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: len(endpoint.keys()) == 120, 60, what="120 deliveries")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    assert len(endpoint.received) == 120 and counters(real_redis)["retried"] == 1
    tasks = pipeline.log("worker").count("rest_consumer.deliver[")
    assert tasks <= 8, f"{tasks} tasks for 120 messages in batches of 50 (+1 retry)"


def test_a_job_queue_is_served_only_by_its_own_workers(pipeline: Any, endpoint: Any,
                                                       real_redis: redis.Redis) -> None:
    topic = "ops.queue"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, queue="dedicated",
                                                               batch_size=1))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(3))
    wait_for(lambda: real_redis.llen("dedicated") == 3, 30, what="3 tasks on the job's queue")
    time.sleep(2)
    assert endpoint.received == []
    pipeline.start_worker("dedicated-worker", "-Q", "dedicated")
    wait_for(lambda: len(endpoint.keys()) == 3, 30, what="the dedicated pool to deliver")


def test_oauth2_token_is_fetched_once_shared_and_renewed_on_401(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a token endpoint and an API that only accepts the current token
    topic = "ops.oauth2"
    pipeline.create_topic(topic, partitions=2)
    issued: list[str] = []

    def respond(request: Any, seen: int) -> Any:
        if request.path == "/token":
            issued.append(f"tok{len(issued)}")
            body = json.dumps({"access_token": issued[-1], "expires_in": 3600})
            return 200, {"Content-Type": "application/json"}, body.encode()
        return 200 if request.headers.get("Authorization") == f"Bearer {issued[-1]}" else 401

    endpoint.respond = respond
    oauth2 = {"token_url": endpoint.url + "/token", "client_id": "cid",
              "client_secret": "csecret-123", "scope": "write"}
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, oauth2=oauth2))
    pipeline.start_worker("worker1")
    pipeline.start_worker("worker2")
    pipeline.start_reader()
    pipeline.produce(topic, json_values(20))
    wait_for(lambda: len([r for r in endpoint.received if r.path != "/token"]) == 20, 60,
             what="20 deliveries")
    assert issued == ["tok0"]
    token_request = next(r for r in endpoint.received if r.path == "/token")
    assert b"grant_type=client_credentials" in token_request.body and b"scope=write" in \
        token_request.body
    # When the server rotates its token, the workers renew once and carry on
    issued.append("rotated")
    pipeline.produce(topic, json_values(5, 20))
    wait_for(lambda: len([r for r in endpoint.received if r.path.startswith("/p/")]) == 25, 60,
             what="5 more deliveries")
    assert issued[-1] != "rotated" and len(issued) == 3
    for name in ("worker1", "worker2", "reader"):
        assert "csecret-123" not in pipeline.log(name)


def test_dead_letters_replayed_through_the_api_are_delivered(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "ops.replay"
    pipeline.create_topic(topic)
    healthy = {"yes": False}
    endpoint.respond = lambda request, seen: 200 if healthy["yes"] else 422
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    client = api(pipeline, real_redis)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(4))
    wait_for(lambda: client.get("/job/people/dead_letters", headers=AUTH).json["total"] == 4,
             30, what="4 dead letters")
    healthy["yes"] = True
    assert client.post("/job/people/dead_letters/replay", headers=AUTH).json["count"] == 4
    wait_for(lambda: len(endpoint.keys()) == 4, 30, what="4 replayed deliveries")
    assert client.get("/job/people/dead_letters", headers=AUTH).json["total"] == 0
