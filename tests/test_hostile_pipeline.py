"""Hostile input, round 2, through the real pipeline (Kafka, Redis, a reader, a prefork
worker, loopback endpoints): the attacks that need it. Each ends as one dead letter with its
reason, the messages around it are delivered, the committed offsets reach the end of every
topic, and every process is still running."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from endpoint import RecordingEndpoint
from pipeline import Pipeline
from test_hostile_data import avro_long, raw_container
from test_pipeline import committed

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.core.config import Settings
from rest_consumer.state import keys
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}
SECRET = "tok-SECRET-round2"
BIG = 1_030_000
"""The oversized record: more than the producer's 1,000,000-byte limit for a dead letter."""


PAIR = {"type": "record", "name": "Pair", "fields": [
    {"name": "a", "type": "null"}, {"name": "b", "type": "null"}]}
BOMB_SCHEMA = {"type": "record", "name": "Bomb", "fields": [
    {"name": "id", "type": "string"},
    {"name": "xs", "type": {"type": "array", "items": PAIR}}]}
# One record: id "bomb", then an array block claiming ten million two-null records.
TEN_MILLION_PAIRS = raw_container(BOMB_SCHEMA, b"\x08bomb" + avro_long(10_000_000) +
                                  avro_long(0), codec="null")


def million_booleans() -> bytes:
    schema = {"type": "record", "name": "Flags", "fields": [
        {"name": "id", "type": "string"},
        {"name": "xs", "type": {"type": "array", "items": "boolean"}}]}
    out = io.BytesIO()
    fastavro.writer(out, schema, [{"id": "flags", "xs": [True] * 1_000_000}], codec="deflate")
    return out.getvalue()


def good(case: str) -> bytes:
    return json.dumps({"id": case}).encode()


class DrippingEndpoint:
    """Answers ``/drip`` with a status line and then one header byte every half second, for
    ever (the peer that stretched a per-read timeout into no timeout); 200 otherwise."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.paths: list[str] = []
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                while not self.stopping.is_set():
                    head = conn.recv(65536)
                    if not head:
                        return
                    path = head.split(b" ")[1].decode()
                    self.paths.append(path)
                    if path.endswith("/drip"):
                        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        while not self.stopping.wait(0.5):
                            conn.sendall(b"x")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                return

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()


def job(job_id: str, topics: list[str], url: str, **more: Any) -> dict[str, Any]:
    return {"id": job_id, "owner": "tests", "type": "POST", "topic": topics,
            "datamap": {"id": "$.msg.id", "blob": "$.msg.blob"}, "url": url + "/{id}",
            "json_body": ["id", "blob"], "token": SECRET, "retry_backoff": 0.2,
            "retry_backoff_max": 1, **more}


@dataclass
class Run:
    client: redis.Redis
    pipe: Pipeline
    endpoint: RecordingEndpoint
    drip: DrippingEndpoint
    api: Any


def letters(run: Run, job_id: str) -> list[dict[str, Any]]:
    answer = run.api.get(f"/job/{job_id}/dead_letters?limit=100", headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return list(answer.get_json()["dead_letters"])


def _produce_big(pipe: Pipeline, topic: str, values: list[bytes]) -> None:
    """A topic that takes a ~1 MB message, written by a producer that may send one."""
    admin = AdminClient(pipe.kafka_config)
    spec = NewTopic(topic, 1, -1, config={"max.message.bytes": "2000000"})
    admin.create_topics([spec])[topic].result(30)
    producer = Producer({**pipe.kafka_config, "message.max.bytes": 2_000_000})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def run(redis_url: str, kafka_bootstrap: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    endpoint = RecordingEndpoint().start()
    endpoint.respond = lambda request, seen: 400 if "/reject" in request.path else 200
    drip = DrippingEndpoint()
    pipe = Pipeline(redis_url, kafka_bootstrap, tmp_path_factory.mktemp("hostile2"))
    prefix = pipe.env["CONSUMER_GROUP_PREFIX"]
    settings = Settings(redis_url=redis_url, api_token=AUTH["Authorization"][7:],
                        destination_allowlist=LOOPBACK, kafka_bootstrap_servers=kafka_bootstrap,
                        consumer_group_prefix=prefix, jobs_dir=pipe.workdir / "jobs")
    store = JobStore.for_settings(client, settings)
    api = create_app(settings, store=store).test_client()
    try:
        for topic in ("h2.bomb", "h2.loop", "h2.drip"):
            pipe.create_topic(topic)
        _produce_big(pipe, "h2.big", [good("b1"), json.dumps(
            {"id": "reject", "blob": "x" * BIG}).encode(), good("b2")])
        store.upsert("bomb", job("bomb", ["h2.bomb"], endpoint.url + "/bomb"))
        store.upsert("bomb-keyed", job("bomb-keyed", ["h2.bomb"], endpoint.url + "/keyed",
                                       ordering="key", ordering_key="$.msg.id"))
        store.upsert("big", job("big", ["h2.big"], endpoint.url + "/big"))
        # Matches its own topic and, but for the rule, every topic the project writes.
        store.upsert("loop", job("loop", [f"^(h2\\.loop|{prefix}\\..*)$"],
                                 endpoint.url + "/reject"))
        store.upsert("drip", job("drip", ["h2.drip"], drip.url, timeout=2, max_retries=1))
        pipe.start_worker()
        pipe.start_reader()
        pipe.produce("h2.bomb", [good("a1"), TEN_MILLION_PAIRS, good("a2"), million_booleans(),
                                 good("a3")])
        pipe.produce("h2.loop", [good(f"l{i}") for i in range(5)])
        pipe.produce("h2.drip", [good("d1"), good("drip"), good("d2")])
        yield Run(client, pipe, endpoint, drip, api)
    finally:
        pipe.stop_all()
        endpoint.stop()
        drip.stop()
        client.close()


def finished(run: Run, job_id: str, letters_expected: int) -> bool:
    index = run.client.zcard(keys.dead_letter_index(job_id))
    return index >= letters_expected and committed(run.client, job_id)


@pytest.mark.parametrize("job_id", ["bomb", "bomb-keyed"])
def test_expansion_bombs_are_dead_letters_naming_the_cap(run: Run, job_id: str) -> None:
    wait_for(lambda: finished(run, job_id, 2), 90, 0.5, f"{job_id} to settle")
    reasons = sorted(letter["reason"] for letter in letters(run, job_id))
    assert len(reasons) == 2 and all("DECODE_MAX_ITEMS" in r for r in reasons), reasons
    prefix = "/bomb/" if job_id == "bomb" else "/keyed/"
    assert sorted(p for p in run.endpoint.paths() if p.startswith(prefix)) == [
        prefix + "a1", prefix + "a2", prefix + "a3"]


def test_an_oversized_failure_is_a_dead_letter_cut_to_fit(run: Run) -> None:
    wait_for(lambda: finished(run, "big", 1), 90, 0.5, "the oversized failure to settle")
    [letter] = letters(run, "big")
    assert letter["status"] == 400
    assert set(letter["truncated"]) >= {"request", "value"}
    assert letter["value_size"] > BIG
    assert sorted(p for p in run.endpoint.paths() if p.startswith("/big/")) == [
        "/big/b1", "/big/b2"]


def test_a_regex_job_never_reads_the_projects_own_topics(run: Run) -> None:
    wait_for(lambda: finished(run, "loop", 5), 90, 0.5, "the loop job's letters")
    time.sleep(12)  # more than a regex refresh: a loop would have grown by now
    assert run.client.zcard(keys.dead_letter_index("loop")) == 5
    sent = [r for r in run.endpoint.failed if r.path.startswith("/reject/")]
    assert sorted(r.path for r in sent) == [f"/reject/l{i}" for i in range(5)]
    assert all(SECRET.encode() not in r.body for r in sent)  # the jobs topic was not read


def test_a_dripping_endpoint_times_out_and_is_dead_lettered(run: Run) -> None:
    wait_for(lambda: finished(run, "drip", 1), 90, 0.5, "the dripping request to end")
    [letter] = letters(run, "drip")
    assert "Timeout" in letter["reason"] and "gave up" in letter["reason"], letter
    assert {"/d1", "/d2"} <= set(run.drip.paths)
    assert run.drip.paths.count("/drip") == 2  # the attempt and its one retry


def test_every_process_is_still_running(run: Run) -> None:
    for job_id, expected in (("bomb", 2), ("big", 1), ("loop", 5), ("drip", 1)):
        wait_for(lambda j=job_id, n=expected: finished(run, j, n), 90, 0.5, job_id)
    for name, proc in run.pipe.procs.items():
        assert proc.poll() is None, f"the {name} died"
    assert "Traceback" not in run.pipe.log("reader")
