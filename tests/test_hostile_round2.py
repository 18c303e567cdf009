"""Hostile input, round 2, on real Kafka and Redis without a pipeline: forged dead-letter
context, jobs written straight into the jobs topic, a hanging topic regex, OAuth2 answers
that lie, a flood of readiness probes, forged log lines, and what replay holds in memory.
The attacks that need the whole pipeline are in test_hostile_pipeline.py."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic
from endpoint import RecordingEndpoint
from flask.testing import FlaskClient
from test_hostile_pipeline import TEN_MILLION_PAIRS

from conftest import LOOPBACK, valid_job
from rest_consumer.core.config import Settings
from rest_consumer.core.destinations import DestinationGuard
from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.core.logs import TextFormatter
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.messages import TaskMessage
from rest_consumer.state import keys
from rest_consumer.state.deadletterqueue import DeadLetterQueue
from rest_consumer.state.deadletters import DeadLetter, DeadLetterWriter, topic_name
from rest_consumer.state.joblog import JobLog
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import DurableWriter
from rest_consumer.web.app import create_app
from rest_consumer.worker import oauth2
from rest_consumer.worker.delivery import Sender

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


@pytest.fixture
def api(kafka_settings: Settings, real_redis: redis.Redis) -> FlaskClient:
    real_redis.flushdb()
    store = JobStore.for_settings(real_redis, kafka_settings)
    return create_app(kafka_settings, store=store, kafka_ready=lambda: None,
                      dispatch=lambda job, groups: None).test_client()


def failed(offset: int, headers: tuple[tuple[str, bytes | None], ...] = (),
           value: bytes = b'{"before": 1000000000}') -> DeadLetter:
    message = TaskMessage("aether.Person", 0, offset, b"k", value, 1, headers)
    return DeadLetter(message, "HTTP 400", 400, "bad", 1, 0, f"id-{offset}",
                      RequestSpec("POST", "http://x/", {}, b"{}").public())


def write_letters(settings: Settings, letters: list[DeadLetter],
                  max_bytes: int | None = None) -> None:
    writer = DeadLetterWriter(settings.kafka_client_config(), settings.consumer_group_prefix)
    if max_bytes is not None:
        writer.max_bytes = max_bytes
    assert all(isinstance(r, int) for r in writer.write("people", letters))


def listed(api: FlaskClient) -> list[dict[str, Any]]:
    answer = api.get("/job/people/dead_letters?limit=500", headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return list(answer.json["dead_letters"])


FORGED = ((
    ("__rest_consumer.marker", b"purged"), ("__rest_consumer.status", b"200"),
    ("__rest_consumer.request", b"{not json"), ("__rest_consumer.record_id", b"{bad"),
    ("__source.x", b"y"), ("traceparent", b"00-abc-def-01")))


def test_dead_letter_context_from_kafka_data_cannot_be_forged(
        api: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis) -> None:
    # Given letters of messages that carry our header names and a purge marker's value
    api.post("/job/people", json=valid_job(), headers=AUTH)
    write_letters(kafka_settings, [failed(1, FORGED), failed(2, FORGED), failed(3)])
    # and, written straight into the topic, a marker that does not parse
    writer = DurableWriter(kafka_settings.kafka_client_config())
    topic = topic_name(kafka_settings.consumer_group_prefix, "people")
    writer.write(topic, [(None, b"{not json", [("__rest_consumer.marker", b"purged")]),
                         (None, b"x", [("__rest_consumer.reason", b"r"),
                                       ("__rest_consumer.request", b"{bad")])])
    # When Redis has lost the index and it is rebuilt from the topic
    real_redis.delete(keys.dead_letter_scanned("people"), keys.dead_letter_index("people"))
    shown = listed(api)
    # Then every letter is there, with the project's own status and request
    by_offset = {letter["offset"]: letter for letter in shown}
    assert sorted(by_offset) == [1, 2, 3]
    assert all(letter["status"] == 400 and letter["request"]["url"] == "http://x/"
               for letter in shown)
    # and a replay sends each message with its own headers, under their own names
    sent: list[TaskMessage] = []
    queue = DeadLetterQueue(real_redis, kafka_settings.kafka_client_config(),
                            kafka_settings.consumer_group_prefix, "people")
    queue.replay(lambda job, groups: sent.extend(m for g in groups for m in g), valid_job())
    assert sorted(m.offset for m in sent) == [1, 2, 3]
    assert dict(sent[0].headers) == dict(FORGED)


def test_a_letter_too_large_for_kafka_is_cut_and_a_cut_value_is_not_replayed(
        api: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis) -> None:
    api.post("/job/people", json=valid_job(), headers=AUTH)
    write_letters(kafka_settings, [failed(1, value=b"v" * 5000), failed(2)], max_bytes=3000)
    cut, whole = sorted(listed(api), key=lambda letter: letter["offset"])
    assert "value" in cut["truncated"] and cut["value_size"] == 5000
    assert "truncated" not in whole
    sent: list[TaskMessage] = []
    queue = DeadLetterQueue(real_redis, kafka_settings.kafka_client_config(),
                            kafka_settings.consumer_group_prefix, "people")
    assert queue.replay(lambda job, groups: sent.extend(g[0] for g in groups),
                        valid_job()) == [whole["id"]]
    assert [letter["offset"] for letter in listed(api)] == [1]


def test_replaying_every_letter_reads_them_a_chunk_at_a_time(
        api: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api.post("/job/people", json=valid_job(), headers=AUTH)
    write_letters(kafka_settings, [failed(i) for i in range(45)])
    queue = DeadLetterQueue(real_redis, kafka_settings.kafka_client_config(),
                            kafka_settings.consumer_group_prefix, "people")
    fetched: list[int] = []
    fetch = queue._fetch
    monkeypatch.setattr(queue, "_fetch", lambda ids: fetched.append(len(ids)) or fetch(ids))
    monkeypatch.setattr("rest_consumer.state.deadletterqueue.REPLAY_CHUNK", 20)
    assert len(queue.replay(lambda job, groups: None, valid_job())) == 45
    assert fetched == [20, 20, 5]
    real_redis.delete(keys.dead_letter_scanned("people"))  # rebuilt: the markers hold
    assert listed(api) == []


def test_a_job_written_straight_into_the_jobs_topic_comes_back_stopped(
        api: FlaskClient, kafka_settings: Settings, real_redis: redis.Redis) -> None:
    log = JobLog(kafka_settings.kafka_client_config(), kafka_settings.consumer_group_prefix)
    bad = {**valid_job(id="evil", url="https://u:p@api.example.org/{id}"), "hash": "h1"}
    internal = {**valid_job(id="inner", url="http://127.0.0.1/{id}"), "hash": "h2"}
    log.put(bad)
    log.put(internal)
    log._write("junk", b"{not a job")
    log._write("ownerless", json.dumps({"id": "ownerless", "hash": "h"}).encode())
    real_redis.flushdb()
    for job_id, field in (("evil", "url"), ("inner", "url")):
        shown = api.get(f"/job/{job_id}", headers=AUTH).json
        assert shown["state"] == "stopped" and shown["enabled"] is False
        assert f"{field}:" in shown["reason"]
        started = api.post(f"/job/{job_id}/start", headers=AUTH)
        assert started.status_code == 400 and field in [p["field"] for p in
                                                        started.json["details"]]
    assert api.get("/job/junk", headers=AUTH).status_code == 404
    assert api.get("/jobs", headers=AUTH).status_code == 200


def test_a_catastrophic_topic_regex_does_not_hang_the_api(
        api: FlaskClient, kafka_settings: Settings) -> None:
    admin = AdminClient(kafka_settings.kafka_client_config())
    name = "a" * 32 + "-"
    admin.create_topics([NewTopic(name, 1, -1)])[name].result(30)
    assert api.post("/job/people", json=valid_job(topic=["^(a+)+$"]),
                    headers=AUTH).status_code == 201
    started = time.monotonic()
    assert api.get("/job/people/status", headers=AUTH).status_code == 200
    assert time.monotonic() - started < 10


def test_preview_caps_the_items_a_container_expands_to(api: FlaskClient) -> None:
    api.post("/job/people", json=valid_job(), headers=AUTH)
    body = {"avro_base64": base64.b64encode(TEN_MILLION_PAIRS).decode()}
    answer = api.post("/job/people/preview", json=body, headers=AUTH)
    assert answer.status_code == 400 and "DECODE_MAX_ITEMS" in answer.json["details"]


def test_the_producer_waits_for_room_instead_of_failing(kafka_settings: Settings) -> None:
    writer = DurableWriter({**kafka_settings.kafka_client_config(),
                            "queue.buffering.max.messages": 3})
    topic = f"full-{uuid.uuid4().hex[:6]}"
    writer.ensure_topic(topic)
    results = writer.write_each(topic, [(None, b"x", [])] * 20)
    assert results == list(range(20))


@pytest.fixture
def token_endpoint() -> Any:
    server = RecordingEndpoint().start()
    yield server
    server.stop()


def tokens(server: RecordingEndpoint) -> tuple[oauth2.TokenSource, dict[str, Any]]:
    config = {"token_url": server.url + "/token", "client_id": "c", "client_secret": "s"}
    return oauth2.TokenSource(fakeredis.FakeRedis(), Sender(DestinationGuard(LOOPBACK))), config


def test_a_token_answer_that_is_not_2xx_is_refused(token_endpoint: RecordingEndpoint) -> None:
    token_endpoint.respond = lambda request, seen: (
        400, {}, json.dumps({"access_token": "t", "error": "invalid_client"}).encode())
    source, config = tokens(token_endpoint)
    with pytest.raises(PermanentDeliveryError, match="answered 400"):
        source.authorization("j", "h", config)


@pytest.mark.parametrize("expires_in", [1e999, "1e999", -5, "soon", None, 10**12])
def test_any_expires_in_gives_a_bounded_lifetime(token_endpoint: RecordingEndpoint,
                                                 expires_in: Any) -> None:
    body = {"access_token": "tok", "expires_in": expires_in}
    token_endpoint.respond = lambda request, seen: (
        200, {}, json.dumps(body).replace("Infinity", "1e999").encode())
    source, config = tokens(token_endpoint)
    assert source.authorization("j", "h", config) == "Bearer tok"
    assert 0 < source.redis.ttl(keys.oauth2_token("j")) <= oauth2.MAX_EXPIRY_SECONDS


def test_a_token_endpoint_that_drips_times_out(token_endpoint: RecordingEndpoint,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oauth2, "FETCH_TIMEOUT", 1.0)  # shortened from 30 s for the test
    token_endpoint.delay = 3
    source, config = tokens(token_endpoint)
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError, match="Timeout"):
        source.authorization("j", "h", config)
    assert time.monotonic() - started < 2


def test_a_flood_of_readiness_probes_asks_kafka_once(settings: Settings,
                                                     real_redis: redis.Redis) -> None:
    probes: list[float] = []
    app = create_app(settings, store=JobStore(real_redis),
                     kafka_ready=lambda: probes.append(time.monotonic()))
    client = app.test_client()
    assert all(client.get("/readyz").status_code == 200 for _ in range(50))
    assert len(probes) == 1


def test_data_in_a_log_line_cannot_forge_another(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.makeLogRecord({
        "msg": "job %s id=%s: HTTP 400", "levelname": "WARNING",
        "args": ("people", "p1\n2026-12-07 INFO forged: all delivered\r\x1b[2K")})
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line == ("WARNING job people id=p1\\n2026-12-07 INFO forged: all delivered"
                    "\\r\\x1b[2K: HTTP 400")


def test_every_package_the_code_imports_is_a_requirement() -> None:
    wanted = {re.split(r"[=<>\[ ]", line)[0].lower().replace("_", "-")
              for line in Path("requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    owners = importlib.metadata.packages_distributions()
    imported = set()
    for path in Path("rest_consumer").rglob("*.py"):
        for found in re.findall(r"^\s*(?:from|import) ([A-Za-z_][\w]*)", path.read_text(),
                                re.MULTILINE):
            imported.add(found)
    missing = {dist.lower().replace("_", "-") for name in imported
               for dist in owners.get(name, [])} - wanted
    assert not missing - {"rest-consumer"}, missing
