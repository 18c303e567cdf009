"""End to end: real Kafka, real Redis, real reader and worker processes, a real endpoint."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import redis

from conftest import FIXTURES, LOOPBACK
from helpers import wait_for
from rest_consumer.state import heartbeat, keys
from rest_consumer.state.deadletterqueue import DeadLetterQueue
from rest_consumer.state.store import JobStore


def person_job(endpoint: Any, topic: str, **overrides: Any) -> dict[str, Any]:
    job = {
        "id": "people", "owner": "tests", "type": "POST", "topic": [topic],
        "datamap": {"schema_name": "$.schema.name", "id": "$.msg.id", "name": "$.msg.name",
                    "age": "$.msg.age", "tags": "$.msg.tags[*]"},
        "constant": {"tenant": "t1"},
        "url": endpoint.url + "/{tenant}/people/{id}",
        "query_params": ["schema_name"],
        "json_body": ["id", "name", "age"],
        "headers": {"X-Tenant": "{tenant}"},
        "token": "secret-token-xyz",
        "retry_backoff": 0.2, "retry_backoff_max": 1,
    }
    job.update(overrides)
    return job


def records(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def counters(client: redis.Redis, job_id: str = "people") -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.counters(job_id)).items()}


def committed(client: redis.Redis, job_id: str = "people") -> bool:
    """True once the job's readers report every fetched message final and committed."""
    beats = heartbeat.fresh_heartbeats(client, job_id)
    partitions = [p for b in beats for p in b.partitions.values()]
    return (bool(partitions) and all(p.get("lag") == 0 for p in partitions)
            and sum(b.in_flight for b in beats) == 0)


def test_aether_fixtures_arrive_as_exactly_the_requests_the_job_describes(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a job reading a topic holding Aether containers (deflate and null codecs) and JSON
    topic = "aether.person.exact"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", person_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    # When the fixtures are produced
    pipeline.produce(topic, [fixture("person-10.avro"), fixture("person-10-null-codec.avro"),
                             fixture("plain.json")])
    # Then every record arrives once, as the job describes it
    expected = records("person-10.jsonl") + records("person-10-null-codec.jsonl")
    wait_for(lambda: len(endpoint.received) >= len(expected) + 1, 60, what="all deliveries")
    by_key = {r.headers["Idempotency-Key"]: r for r in endpoint.received}
    assert len(by_key) == len(endpoint.received) == len(expected) + 1
    for offset, batch in ((0, records("person-10.jsonl")),
                          (1, records("person-10-null-codec.jsonl"))):
        for index, record in enumerate(batch):
            request = by_key[f"people:{topic}:0:{offset}:{index}"]
            assert request.method == "POST"
            assert request.path == f"/t1/people/{record['id']}"
            assert request.query == {"schema_name": ["Person"]}
            assert request.json() == {"id": record["id"], "name": record["name"],
                                      "age": record["age"]}
            assert request.headers["Authorization"] == "Bearer secret-token-xyz"
            assert request.headers["X-Tenant"] == "t1"
    plain = by_key[f"people:{topic}:0:2:0"]
    assert plain.path == "/t1/people/json-1" and plain.query == {}
    assert plain.json() == {"id": "json-1", "name": "Plain JSON", "age": 30}
    wait_for(lambda: committed(real_redis), 20, what="the in-flight count to reach zero")
    assert counters(real_redis)["delivered"] == len(expected) + 1
    for name in ("worker", "reader"):
        assert "secret-token-xyz" not in pipeline.log(name)


def json_values(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"id": f"p{i}", "name": f"n{i}", "age": i}).encode()
            for i in range(start, start + n)]


def simple_job(endpoint: Any, topic: str, **overrides: Any) -> dict[str, Any]:
    job = {"id": "people", "owner": "tests", "type": "PUT", "topic": [topic],
           "datamap": {"id": "$.msg.id", "name": "$.msg.name"},
           "url": endpoint.url + "/p/{id}", "json_body": ["id", "name"],
           "retry_backoff": 0.2, "retry_backoff_max": 1}
    job.update(overrides)
    return job


def heartbeat_hash(client: redis.Redis, job_id: str = "people") -> set[str]:
    return {json.loads(v)["hash"] for v in client.hvals(keys.reader_heartbeat(job_id))}


def dead_letters(pipeline: Any, client: redis.Redis,
                 job_id: str = "people") -> list[dict[str, Any]]:
    """The job's dead letters, oldest first, as the API shows them (read from Kafka)."""
    queue = DeadLetterQueue(client, pipeline.kafka_config,
                            pipeline.env["CONSUMER_GROUP_PREFIX"], job_id)
    return list(reversed(queue.page(500)["dead_letters"]))


def kafka_committed(pipeline: Any, topic: str, partitions: int = 1) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**pipeline.kafka_config,
                         "group.id": f"{pipeline.env['CONSUMER_GROUP_PREFIX']}.people"})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
        # A partition that never held a message has no commit (-1001): nothing to commit
        # there. (Unkeyed messages may all land in one partition: the sticky partitioner.)
        return [max(tp.offset, 0) for tp in tps]
    finally:
        consumer.close()


def test_503_twice_then_200_delivers_every_record(pipeline: Any, endpoint: Any,
                                                   real_redis: redis.Redis) -> None:
    topic = "retry.503"
    pipeline.create_topic(topic)
    endpoint.respond = lambda request, seen: 503 if seen < 2 else 200
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, [fixture("person-10.avro"), *json_values(5)])
    wait_for(lambda: len(endpoint.keys()) == 15, 60, what="15 deliveries")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    assert len(endpoint.received) == 15 and len(endpoint.failed) == 30
    assert counters(real_redis)["retried"] == 30
    assert dead_letters(pipeline, real_redis) == []
    wait_for(lambda: kafka_committed(pipeline, topic) == [6], 10, what="offset 6 committed")


def test_a_400_is_dead_lettered_without_retrying(pipeline: Any, endpoint: Any,
                                                  real_redis: redis.Redis) -> None:
    topic = "dead.400"
    pipeline.create_topic(topic)
    endpoint.respond = lambda request, seen: 400 if request.path == "/p/p1" else 200
    job = simple_job(endpoint, topic, token="tok-400-secret")
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(3))
    wait_for(lambda: len(dead_letters(pipeline, real_redis)) == 1 and len(endpoint.keys()) == 2, 30,
             what="one dead letter and two deliveries")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    assert [r.path for r in endpoint.failed] == ["/p/p1"]  # sent once, never retried
    letter = dead_letters(pipeline, real_redis)[0]
    assert (letter["reason"], letter["status"], letter["offset"]) == ("HTTP 400", 400, 1)
    assert "told to fail" in letter["excerpt"]
    assert letter["request"]["headers"]["Authorization"] == "***"
    assert "tok-400-secret" not in json.dumps(dead_letters(pipeline, real_redis))
    assert counters(real_redis).get("retried", 0) == 0


def test_poison_messages_are_dead_lettered_while_good_ones_flow(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "poison.mixed"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    values = [json_values(1, 0)[0], fixture("poison-binary.bin"), json_values(1, 1)[0],
              fixture("poison-truncated.avro"), b'{"name": "no id"}', json_values(1, 2)[0]]
    pipeline.produce(topic, values)
    wait_for(lambda: len(dead_letters(pipeline, real_redis)) == 3 and len(endpoint.keys()) == 3, 30,
             what="3 dead letters and 3 deliveries")
    letters = {int(d["offset"]): d["reason"] for d in dead_letters(pipeline, real_redis)}
    assert letters[1].startswith("decode: ") and letters[3].startswith("decode: corrupt Avro")
    assert letters[4] == "mapping: url placeholder {id} has no value in this record"
    wait_for(lambda: kafka_committed(pipeline, topic) == [6], 20, what="offset 6 committed")
    worker_log = pipeline.log("worker")
    assert "job people poison.mixed[0]@3" in worker_log


def test_a_job_update_takes_effect_live(pipeline: Any, endpoint: Any,
                                        real_redis: redis.Redis) -> None:
    topic = "live.update"
    pipeline.create_topic(topic)
    store = JobStore(real_redis, LOOPBACK)
    store.upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(1, 0))
    wait_for(lambda: endpoint.paths() == ["/p/p0"], 30, what="the first delivery")
    second, _ = store.upsert("people", simple_job(endpoint, topic,
                                                  url=endpoint.url + "/v2/{id}"))
    wait_for(lambda: heartbeat_hash(real_redis) == {second["hash"]}, 20,
             what="the reader to run the new version")
    pipeline.produce(topic, json_values(1, 1))
    wait_for(lambda: endpoint.paths() == ["/p/p0", "/v2/p1"], 30, what="the second delivery")


def test_stop_and_start(pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "stop.start"
    pipeline.create_topic(topic)
    store = JobStore(real_redis, LOOPBACK)
    store.upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: heartbeat_hash(real_redis), 30, what="the reader")
    store.set_enabled("people", False)
    wait_for(lambda: not real_redis.exists(keys.reader_heartbeat("people")), 20,
             what="the reader to stop")
    pipeline.produce(topic, json_values(2))
    time.sleep(3)  # long enough for a running reader and worker to deliver
    assert endpoint.received == []
    store.set_enabled("people", True)
    wait_for(lambda: len(endpoint.keys()) == 2, 30, what="deliveries after start")


def test_a_worker_killed_mid_flight_loses_nothing(pipeline: Any, endpoint: Any,
                                                  real_redis: redis.Redis) -> None:
    topic = "kill.worker"
    pipeline.create_topic(topic, partitions=2)
    endpoint.delay = 0.02
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(300))
    wait_for(lambda: len(endpoint.received) >= 40, 60, what="deliveries to start")
    pipeline.kill("worker")  # SIGKILL, tasks in flight
    assert len(endpoint.keys()) < 300
    pipeline.start_worker("worker2")
    wait_for(lambda: len(endpoint.keys()) == 300, 90, what="all 300 delivered")
    # Requests may have gone out before the kill while the dead worker never recorded them;
    # their redelivered copies are skipped while its claims last (10 s, beyond the tests' 8 s
    # visibility), so the reader re-dispatches them after REDISPATCH_AFTER (20 s): allow it.
    wait_for(lambda: kafka_committed(pipeline, topic, 2) and
             sum(kafka_committed(pipeline, topic, 2)) == 300, 60, what="all committed")
    # and what the dead worker had answered was recorded as it happened (``progress``): sent
    # again is only what was in flight or answered within a flush interval, in each of its
    # four processes (at most 8 requests in flight each), not whole tasks of 100
    assert len(endpoint.received) - 300 <= 100


def test_a_task_lost_on_its_way_to_a_worker_is_sent_again_within_a_minute(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given tasks out in their queue, and the slow fallback (REDISPATCH_AFTER) out of reach
    topic = "vanished"
    pipeline.create_topic(topic)
    pipeline.env["REDISPATCH_AFTER"] = "300"
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_reader()
    pipeline.produce(topic, json_values(20))
    wait_for(lambda: real_redis.llen("rest_consumer") > 0, 30, what="tasks in their queue")
    # When they vanish as a worker killed between taking a task and recording it would lose
    # them (kombu's BRPOP, then its unacked record)
    real_redis.delete("rest_consumer")
    pipeline.start_worker()
    # Then the reader finds them nowhere once the visibility timeout (8 s here) and a margin
    # have passed, and sends them again
    began = time.monotonic()
    wait_for(lambda: len(endpoint.keys()) == 20, 60, what="all 20 delivered")
    assert time.monotonic() - began < 40
    assert "was never run and is in no queue" in pipeline.log("reader")
    wait_for(lambda: kafka_committed(pipeline, topic) == [20], 30, what="all committed")


def test_flushall_mid_run_loses_nothing(pipeline: Any, endpoint: Any,
                                        real_redis: redis.Redis) -> None:
    topic = "flush.all"
    pipeline.create_topic(topic)
    endpoint.delay = 0.02
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, token="tok-flush"))
    JobStore(real_redis, LOOPBACK).upsert("idle", simple_job(endpoint, "elsewhere", id="idle",
                                                                    enabled=False))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(200))
    wait_for(lambda: len(endpoint.received) >= 30, 60, what="deliveries to start")
    real_redis.flushall()
    wait_for(lambda: len(endpoint.keys()) == 200, 90, what="all 200 delivered")
    assert all(r.headers["Authorization"] == "Bearer tok-flush" for r in endpoint.received)
    # (the reader notices the loss within a second, and may not have yet)
    restored = wait_for(lambda: JobStore(real_redis, LOOPBACK).find("people"), 10,
                        what="the job restored")
    assert restored["token"] == "tok-flush"
    # the stopped job too: every job comes back from the jobs topic, not only running ones
    assert JobStore(real_redis, LOOPBACK).get("idle")["enabled"] is False
    wait_for(lambda: kafka_committed(pipeline, topic) == [200], 30, what="all committed")


def test_a_reader_killed_loses_nothing_and_its_successor_sends_nothing_twice(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a slow job (2 requests at once, 50 ms each) with 100 messages out in tasks
    topic = "reader.restart"
    pipeline.create_topic(topic)
    endpoint.delay = 0.05
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic, concurrency=2))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(100))
    wait_for(lambda: len(endpoint.received) >= 20, 60, what="deliveries to start")
    # When the reader is SIGKILLed before it committed most of them, and a new one starts
    pipeline.kill("reader")
    assert len(endpoint.keys()) < 90
    pipeline.produce(topic, json_values(100, 100))
    pipeline.start_reader("reader2")
    # Then the new reader waits for the tasks still out instead of dispatching them again
    wait_for(lambda: len(endpoint.keys()) == 200, 60, what="all 200 delivered")
    wait_for(lambda: kafka_committed(pipeline, topic) == [200], 30, what="all committed")
    assert len(endpoint.received) == 200, "a message was delivered twice"
    assert "adopts" in pipeline.log("reader2")


def test_two_readers_share_a_jobs_partitions(pipeline: Any, endpoint: Any,
                                             real_redis: redis.Redis) -> None:
    topic = "two.readers"
    pipeline.create_topic(topic, partitions=4)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader("reader1")
    pipeline.start_reader("reader2")

    def both_assigned() -> bool:
        reports = [json.loads(v) for v in real_redis.hvals(keys.reader_heartbeat("people"))]
        return len(reports) == 2 and all(r["partitions"] for r in reports)

    wait_for(both_assigned, 40, what="both readers to hold partitions")
    pipeline.produce(topic, json_values(80))
    wait_for(lambda: len(endpoint.keys()) == 80, 60, what="all 80 delivered")
    assert "assigned" in pipeline.log("reader1") and "assigned" in pipeline.log("reader2")


def test_task_arguments_carry_no_secret_and_read_well_in_flower(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a job with a secret and no worker, so its tasks wait in the Redis queue
    topic = "queued.tasks"
    pipeline.create_topic(topic)
    # (one task per message, so each reads as its own offset)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(
        endpoint, topic, basic_auth={"user": "u", "pw": "pw-x1"}, batch_size=1))
    pipeline.start_reader()
    pipeline.produce(topic, json_values(3))
    wait_for(lambda: real_redis.llen("rest_consumer") == 3, 30, what="3 queued tasks")
    # Then no queued task message holds the secret, and each reads job=<id> topic[p]@offset
    raw = real_redis.lrange("rest_consumer", 0, -1)
    for message in raw:
        assert b"pw-x1" not in message and base64.b64encode(b"u:pw-x1") not in message
    reprs = sorted(json.loads(m)["headers"]["argsrepr"] for m in raw)
    assert reprs == [f"job=people {topic}[0]@{i}" for i in range(3)]
    pipeline.start_worker()
    wait_for(lambda: len(endpoint.keys()) == 3, 30, what="deliveries")
    assert endpoint.received[0].headers["Authorization"] == "Basic " + base64.b64encode(
        b"u:pw-x1").decode()


def test_messages_keep_their_key_headers_and_meta(pipeline: Any, endpoint: Any,
                                                  real_redis: redis.Redis,
                                                  tmp_path: Path) -> None:
    topic = "meta.fields"
    pipeline.create_topic(topic)
    job = simple_job(endpoint, topic, datamap={"id": "$.msg.id", "key": "$.meta.key",
                                               "source": "$.meta.headers.source",
                                               "offset": "$.meta.offset"},
                     json_body=["key", "source", "offset"])
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(1), key=b"k-1", headers=[("source", b"sensor")])
    wait_for(lambda: endpoint.received, 30, what="the delivery")
    assert endpoint.received[0].json() == {"key": "k-1", "source": "sensor", "offset": 0}


def test_sigterm_stops_reader_and_worker_cleanly_after_committing(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "sigterm.clean"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, json_values(5))
    wait_for(lambda: len(endpoint.keys()) == 5, 30, what="5 deliveries")
    wait_for(lambda: committed(real_redis), 20, what="nothing in flight")
    assert pipeline.stop("reader") == 0
    assert pipeline.stop("worker") == 0
    assert "job people: reader stopped" in pipeline.log("reader")
    assert kafka_committed(pipeline, topic) == [5]
    assert real_redis.hlen(keys.reader_heartbeat("people")) == 0
