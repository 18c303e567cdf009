"""Job operations through the API: dead letters, preview, set_offset validation."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from conftest import FIXTURES, valid_job
from rest_consumer.api import create_app
from rest_consumer.config import Settings
from rest_consumer.errors import PermanentDeliveryError
from rest_consumer.mapping import RequestSpec
from rest_consumer.messages import TaskMessage
from rest_consumer.outcomes import TaskOutcomes
from rest_consumer.records import Outcome
from rest_consumer.store import JobStore

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


def add_dead_letters(client_redis: Any, n: int) -> None:
    out = TaskOutcomes("people")
    for offset in range(n):
        message = TaskMessage("aether.Person", 0, offset, value=b"{}", attempt=3)
        error = PermanentDeliveryError("HTTP 400", 400, "bad")
        out.dead_letter(message, Outcome.dead(0, f"HTTP 400 #{offset}", error=error,
                                              request=RequestSpec("POST", "http://x", {}),
                                              record_id=f"id-{offset}"))
    pipe = client_redis.pipeline()
    out.write(pipe)
    pipe.execute()


def test_dead_letters_are_paged_newest_first(client: FlaskClient, fake_redis: Any) -> None:
    add_dead_letters(fake_redis, 5)
    first = client.get("/job/people/dead_letters?limit=2", headers=AUTH).json
    assert [d["offset"] for d in first["dead_letters"]] == [4, 3]
    assert first["total"] == 5
    letter = first["dead_letters"][0]
    assert (letter["reason"], letter["status"], letter["record_id"]) == ("HTTP 400 #4", 400,
                                                                         "id-4")
    second = client.get(f"/job/people/dead_letters?limit=2&before={first['next']}",
                        headers=AUTH).json
    third = client.get(f"/job/people/dead_letters?limit=2&before={second['next']}",
                       headers=AUTH).json
    assert [d["offset"] for d in second["dead_letters"] + third["dead_letters"]] == [2, 1, 0]
    assert third["next"] is None


def test_bad_paging_arguments_are_400(client: FlaskClient) -> None:
    for query in ("limit=0", "limit=x", "limit=501", "before=abc"):
        assert client.get(f"/job/people/dead_letters?{query}", headers=AUTH).status_code == 400
    assert client.get("/job/ghost/dead_letters", headers=AUTH).status_code == 404


def test_replay_sends_each_again_and_removes_it(client: FlaskClient, fake_redis: Any,
                                                sent: list[Any]) -> None:
    add_dead_letters(fake_redis, 3)
    ids = [d["id"] for d in client.get("/job/people/dead_letters", headers=AUTH).json[
        "dead_letters"]]
    one = client.post("/job/people/dead_letters/replay", json={"ids": ids[:1]}, headers=AUTH)
    assert one.json == {"replayed": ids[:1], "count": 1}
    assert sent[0][1][0][0] == TaskMessage("aether.Person", 0, 2, value=b"{}", replay=True,
                                           indexes=(0,))
    rest = client.post("/job/people/dead_letters/replay", headers=AUTH).json
    assert rest["count"] == 2
    assert client.get("/job/people/dead_letters", headers=AUTH).json["total"] == 0
    bad = client.post("/job/people/dead_letters/replay", json={"ids": "all"}, headers=AUTH)
    assert bad.status_code == 400


def test_purge(client: FlaskClient, fake_redis: Any) -> None:
    add_dead_letters(fake_redis, 2)
    assert client.delete("/job/people/dead_letters", headers=AUTH).json == {"purged": 2}
    assert client.get("/job/people/dead_letters", headers=AUTH).json["total"] == 0


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


def test_set_offset_refuses_what_is_not_an_offset(client: FlaskClient) -> None:
    for offset in ("-1", "first", "1.5"):
        response = client.post(f"/job/people/set_offset/{offset}", headers=AUTH)
        assert response.status_code == 400, offset
