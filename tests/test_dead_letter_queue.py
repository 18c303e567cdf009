"""Dead letters in Kafka (``<prefix>.dlq.<job>``) through the API, on real Kafka and Redis:
paging, replay, purge, the record format, and surviving the loss of Redis's data."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from flask.testing import FlaskClient

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.core.errors import PermanentDeliveryError
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome
from rest_consumer.state import keys
from rest_consumer.state.deadletters import DeadLetterWriter, topic_name
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import Refusal
from rest_consumer.web.app import create_app
from rest_consumer.worker.outcomes import MAX_LETTER_REFUSALS, TaskOutcomes

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


@pytest.fixture
def sent() -> list[tuple[str, list[list[TaskMessage]]]]:
    return []


@pytest.fixture
def client(kafka_settings: Settings, real_redis: redis.Redis, sent: list[Any]) -> FlaskClient:
    store = JobStore.for_settings(real_redis, kafka_settings)
    app = create_app(kafka_settings, store=store, kafka_ready=lambda: None,
                     dispatch=lambda job, messages: sent.append((job["id"], messages)))
    store.upsert("people", valid_job(token="tok-secret"))
    return app.test_client()


def message(offset: int) -> TaskMessage:
    return TaskMessage("aether.Person", 2, offset, key=f"k{offset}".encode(),
                       value=b'{"id": "p%d"}' % offset, timestamp=1_700_000_000_000 + offset,
                       headers=(("source", b"aether"),), attempt=3)


def add_dead_letters(settings: Settings, client: redis.Redis, n: int,
                     job_id: str = "people") -> None:
    """What a worker does with a task whose ``n`` records were refused with HTTP 400."""
    out = TaskOutcomes(job_id)
    for offset in range(n):
        error = PermanentDeliveryError("HTTP 400", 400, "bad")
        request = RequestSpec("POST", "http://x/?token=tok-secret", {})
        out.dead_letter(message(offset), Outcome.dead(0, f"HTTP 400 #{offset}", error=error,
                                                      request=request, record_id=f"id-{offset}"))
    writer = DeadLetterWriter(settings.kafka_client_config(), settings.consumer_group_prefix)
    out.settle_letters(writer.write(job_id, out.letters))
    pipe = client.pipeline()
    out.write(pipe)
    pipe.execute()


def letters(client: FlaskClient, query: str = "") -> dict[str, Any]:
    answer = client.get(f"/job/people/dead_letters{query}", headers=AUTH)
    assert answer.status_code == 200, answer.json
    return dict(answer.json)


def test_a_dead_letter_is_a_kafka_record_in_kafka_connects_convention(
        client: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis) -> None:
    add_dead_letters(kafka_settings, real_redis, 1)
    consumer = Consumer({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers,
                         "group.id": "look", "enable.auto.commit": False})
    topic = topic_name(kafka_settings.consumer_group_prefix, "people")
    consumer.assign([TopicPartition(topic, 0, 0)])
    record = consumer.poll(10)
    consumer.close()
    assert record is not None and record.error() is None
    assert (record.key(), record.value()) == (b"k0", b'{"id": "p0"}')
    headers = dict(record.headers() or [])
    assert headers["source"] == b"aether"  # the original headers are kept
    assert {name: headers[f"__rest_consumer.{name}"] for name in (
        "reason", "status", "attempts", "topic", "partition", "offset", "index")} == {
        "reason": b"HTTP 400 #0", "status": b"400", "attempts": b"3",
        "topic": b"aether.Person", "partition": b"2", "offset": b"0", "index": b"0"}
    assert b"tok-secret" not in headers["__rest_consumer.request"]


def test_dead_letters_are_paged_newest_first(client: FlaskClient, kafka_settings: Settings,
                                             real_redis: redis.Redis) -> None:
    add_dead_letters(kafka_settings, real_redis, 5)
    first = letters(client, "?limit=2")
    assert [d["offset"] for d in first["dead_letters"]] == [4, 3]
    assert first["total"] == 5
    letter = first["dead_letters"][0]
    assert (letter["reason"], letter["status"], letter["record_id"], letter["attempts"]) == (
        "HTTP 400 #4", 400, "id-4", 3)
    second = letters(client, f"?limit=2&before={first['next']}")
    third = letters(client, f"?limit=2&before={second['next']}")
    assert [d["offset"] for d in second["dead_letters"] + third["dead_letters"]] == [2, 1, 0]
    assert third["next"] is None


def test_replay_sends_each_again_and_removes_it(client: FlaskClient, kafka_settings: Settings,
                                                real_redis: redis.Redis,
                                                sent: list[Any]) -> None:
    add_dead_letters(kafka_settings, real_redis, 3)
    ids = [d["id"] for d in letters(client)["dead_letters"]]
    one = client.post("/job/people/dead_letters/replay", json={"ids": ids[:1]}, headers=AUTH)
    assert one.json == {"replayed": ids[:1], "count": 1}
    assert sent[0][1][0][0] == replace(message(2), attempt=0, replay=True, indexes=(0,))
    rest = client.post("/job/people/dead_letters/replay", headers=AUTH).json
    assert rest["count"] == 2
    assert letters(client)["total"] == 0
    bad = client.post("/job/people/dead_letters/replay", json={"ids": "all"}, headers=AUTH)
    assert bad.status_code == 400


def test_purge(client: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis) -> None:
    add_dead_letters(kafka_settings, real_redis, 2)
    assert client.delete("/job/people/dead_letters", headers=AUTH).json == {"purged": 2}
    assert letters(client)["total"] == 0
    add_dead_letters(kafka_settings, real_redis, 1)
    assert letters(client)["total"] == 1


def test_dead_letters_replays_and_purges_survive_the_loss_of_redis(
        client: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis,
        sent: list[Any]) -> None:
    # Given 6 dead letters: 2 purged, then 1 replayed
    add_dead_letters(kafka_settings, real_redis, 2)
    client.delete("/job/people/dead_letters", headers=AUTH)
    add_dead_letters(kafka_settings, real_redis, 4)
    replayed = letters(client)["dead_letters"][1]["id"]
    client.post("/job/people/dead_letters/replay", json={"ids": [replayed]}, headers=AUTH)
    before = letters(client)
    # When Redis loses everything (jobs included)
    real_redis.flushall()
    # Then the API rebuilds the job and the dead letters from Kafka, in the same state
    after = letters(client)
    assert after == before and after["total"] == 3
    assert replayed not in [d["id"] for d in after["dead_letters"]]


def test_a_deleted_job_leaves_its_dead_letters_behind(client: FlaskClient,
                                                      kafka_settings: Settings,
                                                      real_redis: redis.Redis) -> None:
    add_dead_letters(kafka_settings, real_redis, 2)
    assert client.delete("/job/people", headers=AUTH).status_code == 200
    assert client.post("/job/people", json=valid_job(), headers=AUTH).status_code in (200, 201)
    real_redis.delete(keys.dead_letter_scanned("people"))  # force a rebuild from the topic
    assert letters(client)["total"] == 0


def test_letters_kafka_refused_come_back_as_retries_of_the_same_records() -> None:
    out = TaskOutcomes("people")
    whole, partly = message(7), message(8)
    out.dead_letter(whole, Outcome.dead(None, "decode: not Avro"))
    out.record_final(whole)
    out.dead_letter(partly, Outcome.dead(4, "HTTP 400"))
    out.dead_letter(partly, Outcome.dead(9, "HTTP 400"))
    out.record_final(partly)
    again = out.settle_letters([Refusal("Local: Message timed out", True)] * 3)
    assert again == [whole, partly.retry([4, 9], failed=False)]
    assert dict(out.final) == {("aether.Person", 2): []} and out.counters["dead_lettered"] == 0


def test_a_letter_kafka_refuses_again_and_again_ends_final_and_counted() -> None:
    # Given a message whose two failed records' letters Kafka refuses as they are
    out = TaskOutcomes("people")
    msg = message(5)
    for refusals in range(MAX_LETTER_REFUSALS):
        out = TaskOutcomes("people")
        out.dead_letter(msg, Outcome.dead(1, "HTTP 400"))
        out.dead_letter(msg, Outcome.dead(2, "HTTP 400"))
        out.record_final(msg)
        # When the first is refused and the second written
        again = out.settle_letters([Refusal("Broker: Message size too large", False), 41])
        # Then the written one keeps its offset; the refused one comes back, counted
        assert out.letter_offsets == [41]
        if refusals < MAX_LETTER_REFUSALS - 1:
            assert again == [replace(msg.retry([1], failed=False), letter_refusals=refusals + 1)]
            msg = again[0]
    # and at the bound the record is final without its letter, counted as lost
    assert again == [] and dict(out.final) == {("aether.Person", 2): [5]}
    assert out.counters["dead_letters_lost"] == 1 and out.counters["dead_lettered"] == 1
