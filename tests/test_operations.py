"""Job operations through the API: dead-letter arguments, preview, set_offset validation
(dead letters themselves: ``test_dead_letter_queue``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from conftest import FIXTURES, valid_job
from rest_consumer.core.config import Settings
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


@pytest.fixture
def sent() -> list[tuple[str, list[dict[str, Any]]]]:
    return []


@pytest.fixture
def client(settings: Settings, fake_redis: Any, sent: list[Any]) -> FlaskClient:
    app = create_app(settings, store=JobStore(fake_redis), kafka_ready=lambda: None,
                     dispatch=lambda job, messages: sent.append((job["id"], messages)))
    JobStore(fake_redis).upsert("people", valid_job(token="tok-secret"))
    return app.test_client()


def test_bad_paging_arguments_are_400(client: FlaskClient) -> None:
    for query in ("limit=0", "limit=x", "limit=501", "before=abc"):
        assert client.get(f"/job/people/dead_letters?{query}", headers=AUTH).status_code == 400
    assert client.get("/job/ghost/dead_letters", headers=AUTH).status_code == 404


def test_preview_shows_the_request_without_secrets(client: FlaskClient) -> None:
    answer = client.post("/job/people/preview", json={"id": "x 1", "name": "N"}, headers=AUTH)
    request = answer.json["requests"][0]["request"]
    assert request["url"] == "http://api.example.org/people/x%201"
    assert request["headers"]["Authorization"] == "***"
    assert json.loads(request["body"]) == {"id": "x 1", "name": "N"}
    assert b"tok-secret" not in answer.data


def test_preview_of_an_avro_container_and_of_mapping_errors(client: FlaskClient) -> None:
    avro = base64.b64encode((FIXTURES / "person-10.avro").read_bytes()).decode()
    answer = client.post("/job/people/preview", json={"avro_base64": avro}, headers=AUTH).json
    assert len(answer["requests"]) == 10
    assert answer["requests"][0]["request"]["url"].endswith("?schema_name=Person")
    broken = client.post("/job/people/preview", json={"name": "no id"}, headers=AUTH).json
    assert "has no value" in broken["requests"][0]["error"]
    bad = client.post("/job/people/preview", json={"avro_base64": "!!"}, headers=AUTH)
    assert bad.status_code == 400


def test_preview_of_a_batch_job_shows_the_batches_sample_records_make(
        client: FlaskClient, fake_redis: Any) -> None:
    JobStore(fake_redis).upsert("batched", valid_job(
        id="batched", url="http://api.example.org/people", query_params=[],
        request_batch={"max_records": 2, "wrap": "{people: records}"}))
    answer = client.post("/job/batched/preview", headers=AUTH, json={"sample_records": [
        {"id": "a", "name": "A"}, {"name": "no id"}, {"id": "b", "name": "B"},
        {"id": "c", "name": "C"}]}).json
    assert len(answer["requests"]) == 4
    assert [b["records"] for b in answer["batches"]] == [[0, 1], [2, 3]]
    assert json.loads(answer["batches"][0]["request"]["body"]) == {"people": [
        {"id": "a", "name": "A"}, {"name": "no id"}]}


def test_set_offset_refuses_what_is_not_an_offset(client: FlaskClient) -> None:
    for offset in ("-1", "first", "1.5"):
        response = client.post(f"/job/people/set_offset/{offset}", headers=AUTH)
        assert response.status_code == 400, offset
