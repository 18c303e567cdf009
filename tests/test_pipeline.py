"""End to end: real Kafka, real Redis, real reader and worker processes, a real endpoint."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis

from conftest import FIXTURES
from helpers import wait_for
from rest_consumer import keys
from rest_consumer.store import JobStore


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
    """True once the reader has nothing in flight for the job."""
    return int(client.get(keys.in_flight(job_id)) or 0) == 0


def test_aether_fixtures_arrive_as_exactly_the_requests_the_job_describes(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a job reading a topic holding Aether containers (deflate and null codecs) and JSON
    topic = "aether.person.exact"
    pipeline.create_topic(topic)
    JobStore(real_redis).upsert("people", person_job(endpoint, topic))
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
