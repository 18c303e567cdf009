"""Kafka over SASL_SSL (SCRAM-SHA-512, a certificate made on the fly): every consumer,
producer and admin client of the pipeline takes the ``KAFKA_*`` settings, and the SASL
password never reaches a log or an API answer."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from test_cli import request
from test_pipeline import committed, dead_letters, kafka_committed, simple_job

from conftest import LOOPBACK
from helpers import spawn, stop, wait_for
from rest_consumer.devtools.kafka_cluster import SecureKafkaBroker
from rest_consumer.devtools.services import free_port
from rest_consumer.state.store import JobStore


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafkaBroker]:
    broker = SecureKafkaBroker(tmp_path_factory.mktemp("secure-kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def secure_pipeline(secure_broker: SecureKafkaBroker, redis_url: str,
                    tmp_path: Path) -> Iterator[Any]:
    from pipeline import Pipeline

    pipe = Pipeline(redis_url, secure_broker.bootstrap_servers, tmp_path, secure_broker.env())
    yield pipe
    pipe.stop_all()


def test_the_pipeline_runs_over_sasl_ssl_and_the_password_stays_secret(
        secure_broker: SecureKafkaBroker, secure_pipeline: Any, endpoint: Any,
        real_redis: redis.Redis, tmp_path: Path) -> None:
    # Given a job, its reader, a worker and the API, all talking to Kafka over SASL_SSL only
    pipeline = secure_pipeline
    topic = "secure.people"
    pipeline.create_topic(topic)
    endpoint.respond = lambda request, seen: 400 if request.path == "/p/bad" else 200
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    port = free_port()
    with open(tmp_path / "api.log", "w") as out:
        api = spawn("api", env={**pipeline.env, "API_PORT": str(port), "API_USER": "admin",
                                "API_PASSWORD": "pw-for-tests", "LOG_LEVEL": "DEBUG"},
                    stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # When records arrive, one of which the endpoint refuses
        values = [json.dumps({"id": f"p{i}", "name": "n"}).encode() for i in range(20)]
        pipeline.produce(topic, [*values, b'{"id": "bad", "name": "n"}'])
        # Then every record is delivered, the refused one is a dead letter in Kafka, offsets
        # are committed, and the API reads Kafka too (readiness, partitions, dead letters)
        wait_for(lambda: len(endpoint.keys()) == 20, 60, what="20 deliveries over SASL_SSL")
        letters = wait_for(lambda: dead_letters(pipeline, real_redis), 30, what="the letter")
        assert letters[0]["reason"] == "HTTP 400"
        wait_for(lambda: committed(real_redis), 30, what="committed")
        assert kafka_committed(pipeline, topic) == [21]
        ready = wait_for(lambda: _get(f"{base}/readyz"), 60, what="the API")
        assert ready["checks"] == {"redis": "ok", "kafka": "ok"}
        status = _get(f"{base}/job/people/status")
        assert status["partitions"][0]["lag"] == 0, status
        answers = json.dumps([status, _get(f"{base}/job/people/dead_letters"),
                              _get(f"{base}/readyz")])
    finally:
        stop(api)
    # And the SASL password appears in no log and no answer
    logs = "".join((tmp_path / name).read_text() for name in ("api.log", "worker.log",
                                                              "reader.log"))
    assert secure_broker.password not in logs + answers


def test_a_wrong_sasl_password_is_refused(secure_broker: SecureKafkaBroker) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**secure_broker.client_config(), "sasl.password": "wrong-password",
                         "log_level": 0})
    with pytest.raises(Exception, match=r"Broker transport failure|Authentication"):
        admin.list_topics(timeout=5)


def _get(url: str) -> Any:
    status, body = request(url, auth="Basic YWRtaW46cHctZm9yLXRlc3Rz")
    assert status == 200, (status, body)
    return body


