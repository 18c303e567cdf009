"""The Flask API, on fakeredis and on the real Redis (``any_redis`` runs each test on both)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.core.errors import ConfigError
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

BASIC = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret-admin").decode()}
BEARER = {"Authorization": "Bearer tok-0123456789abcdef"}


@pytest.fixture
def client(settings: Settings, any_redis: Any) -> FlaskClient:
    app = create_app(settings, store=JobStore(any_redis), kafka_ready=lambda: None)
    return app.test_client()


def post_job(client: FlaskClient, job_id: str, doc: Any, **kw: Any) -> Any:
    return client.post(f"/job/{job_id}", json=doc, headers=BASIC, **kw)


def test_the_api_refuses_to_start_without_credentials(any_redis: Any) -> None:
    with pytest.raises(ConfigError, match="API_USER"):
        create_app(Settings(), store=JobStore(any_redis))
    with pytest.raises(ConfigError):
        create_app(Settings(api_user="admin"), store=JobStore(any_redis))


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"eve:s3cret-admin").decode()},
    {"Authorization": "Basic %%%"}, {"Authorization": "Bearer wrong"},
    {"Authorization": "tok-123"},
])
@pytest.mark.parametrize("method,path", [
    ("GET", "/jobs"), ("GET", "/jobs/alice"), ("GET", "/job/people"), ("POST", "/job/people"),
    ("DELETE", "/job/people"), ("POST", "/job/people/start"), ("POST", "/job/people/stop"),
    ("GET", "/job_schema"), ("GET", "/openapi.json"), ("GET", "/metrics"),
    ("GET", "/job/people/status"), ("POST", "/job/people/preview"),
    ("POST", "/job/people/set_offset/0"), ("GET", "/job/people/dead_letters"),
    ("POST", "/job/people/dead_letters/replay"), ("DELETE", "/job/people/dead_letters"),
])
def test_every_job_route_refuses_missing_or_wrong_credentials(
        client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> None:
    response = client.open(path, method=method, headers=headers, json=valid_job())
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_health_routes_need_no_credentials(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {"status": "ready"}
    detailed = client.get("/readyz", headers=BASIC)
    assert detailed.json["checks"] == {"redis": "ok", "kafka": "ok"}


def test_readyz_says_what_is_not_ready(settings: Settings, any_redis: Any) -> None:
    def down() -> None:
        raise ConnectionError("broker down")

    app = create_app(settings, store=JobStore(any_redis), kafka_ready=down)
    anonymous = app.test_client().get("/readyz")
    assert anonymous.status_code == 503 and anonymous.json == {"status": "not ready"}
    response = app.test_client().get("/readyz", headers=BASIC)
    assert response.status_code == 503
    assert response.json["checks"]["kafka"] == "unavailable: broker down"


def test_a_job_round_trips_with_either_credential(client: FlaskClient) -> None:
    created = post_job(client, "people", valid_job())
    assert created.status_code == 201
    assert created.json["id"] == "people" and len(created.json["hash"]) == 64
    fetched = client.get("/job/people", headers=BEARER)
    assert fetched.status_code == 200 and fetched.json == created.json
    assert fetched.json["state"] == "pending"
    updated = post_job(client, "people", valid_job(url="http://api.example.net:9/{id}"))
    assert updated.status_code == 200 and updated.json["hash"] != created.json["hash"]


def test_the_id_may_be_omitted_but_must_match_when_given(client: FlaskClient) -> None:
    doc = valid_job()
    del doc["id"]
    assert post_job(client, "people", doc).status_code == 201
    mismatch = post_job(client, "people", valid_job(id="other"))
    assert mismatch.status_code == 400
    assert mismatch.json["details"][0]["field"] == "id"


def test_listing_by_owner(client: FlaskClient) -> None:
    post_job(client, "a", valid_job(id="a"))
    post_job(client, "b", valid_job(id="b", owner="bob"))
    assert [j["id"] for j in client.get("/jobs", headers=BASIC).json] == ["a", "b"]
    assert [j["id"] for j in client.get("/jobs/bob", headers=BASIC).json] == ["b"]
    assert client.get("/jobs/nobody", headers=BASIC).json == []


@pytest.mark.parametrize("doc,field", [
    (valid_job(type="FETCH"), "type"),
    (valid_job(topic=[]), "topic"),
    (valid_job(topic="aether.Person"), "topic"),
    (valid_job(datamap={"id": "$.msg["}), "datamap.id"),
    (valid_job(url="ftp://h/{id}"), "url"),
    (valid_job(url="http://h/{ghost}"), "url"),
    (valid_job(headers={"X-A": "{ghost}"}), "headers.X-A"),
    (valid_job(query_params=["ghost"]), "query_params.0"),
    (valid_job(json_body=["ghost"]), "json_body.0"),
    (valid_job(ratelimit=-1), "ratelimit"),
    (valid_job(offset_reset="middle"), "offset_reset"),
    (valid_job(token="***"), "token"),
    (valid_job(surprise=1), "surprise"),
    ({k: v for k, v in valid_job().items() if k != "owner"}, "owner"),
])
def test_each_kind_of_invalid_job_is_refused_with_its_field(
        client: FlaskClient, doc: dict[str, Any], field: str) -> None:
    response = post_job(client, "people", doc)
    assert response.status_code == 400
    assert response.json["error"] == "invalid job"
    assert field in [p["field"] for p in response.json["details"]]
    assert client.get("/job/people", headers=BASIC).status_code == 404


def test_all_problems_come_back_at_once(client: FlaskClient) -> None:
    doc = valid_job(type="FETCH", url="ftp://h/{ghost}", json_body=["nope"])
    fields = {p["field"] for p in post_job(client, "people", doc).json["details"]}
    assert fields == {"type", "url", "json_body.0"}


def test_secrets_are_redacted_and_kept_when_sent_back(client: FlaskClient,
                                                      any_redis: Any) -> None:
    doc = valid_job(basic_auth={"user": "u", "password": "hunter2"})
    shown = post_job(client, "people", doc).json
    assert shown["basic_auth"] == {"user": "u", "password": "***"}
    for body in (client.get("/job/people", headers=BASIC).data,
                 client.get("/jobs", headers=BASIC).data,
                 client.post("/job/people/stop", headers=BASIC).data):
        assert b"hunter2" not in body
    again = post_job(client, "people", client.get("/job/people", headers=BASIC).json)
    assert again.status_code == 200
    assert JobStore(any_redis).get("people")["basic_auth"]["password"] == "hunter2"


def test_start_and_stop_set_enabled(client: FlaskClient) -> None:
    post_job(client, "people", valid_job())
    stopped = client.post("/job/people/stop", headers=BASIC).json
    assert stopped["enabled"] is False and stopped["state"] == "stopped"
    assert client.post("/job/people/start", headers=BASIC).json["enabled"] is True


def test_delete_removes_the_job(client: FlaskClient) -> None:
    post_job(client, "people", valid_job())
    assert client.delete("/job/people", headers=BASIC).json == {"id": "people", "deleted": True}
    assert client.get("/job/people", headers=BASIC).status_code == 404
    assert client.delete("/job/people", headers=BASIC).status_code == 404


def test_errors_are_json_with_the_right_status(client: FlaskClient) -> None:
    not_json = client.post("/job/people", data="x", headers=BASIC)
    assert not_json.status_code == 415 and not_json.json["error"] == "unsupported media type"
    malformed = client.post("/job/people", data="{", headers={**BASIC,
                                                              "Content-Type": "application/json"})
    assert malformed.status_code == 400 and "error" in malformed.json
    not_object = post_job(client, "people", [1, 2])
    assert not_object.status_code == 400
    assert client.put("/job/people", headers=BASIC).status_code == 405
    assert client.get("/nowhere", headers=BASIC).json["error"] == "not found"
    too_big = client.post("/job/people", data="x" * 2_000_000,
                          headers={**BASIC, "Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json["error"] == "request entity too large"


def test_job_schema_is_served(client: FlaskClient) -> None:
    schema = client.get("/job_schema", headers=BASIC).json
    assert schema["required"] == ["id", "owner", "type", "topic", "datamap", "url"]


def test_job_files_load_at_start_and_never_override(settings: Settings, any_redis: Any,
                                                    tmp_path: Path) -> None:
    # Given a stored job and three files: one for the same id, one new, one broken
    store = JobStore(any_redis)
    store.upsert("people", valid_job(owner="api"))
    settings.jobs_dir.mkdir()
    (settings.jobs_dir / "people.json").write_text(json.dumps(valid_job(owner="file")))
    (settings.jobs_dir / "fresh.json").write_text(json.dumps(valid_job(id="fresh")))
    (settings.jobs_dir / "broken.json").write_text("{not json")
    (settings.jobs_dir / "invalid.json").write_text(json.dumps(valid_job(id="inv", type="X")))
    # When the API starts
    create_app(settings, store=store, kafka_ready=lambda: None)
    # Then the stored job wins, the new one is created, the bad ones are skipped
    assert store.get("people")["owner"] == "api"
    assert store.get("fresh")["owner"] == "alice"
    assert [job["id"] for job in store.list()] == ["fresh", "people"]


@pytest.mark.parametrize("job_id", ["a:b", "a*", "job%0Aevil", "x" * 129, "a%20b"])
def test_ids_that_could_escape_keys_or_group_names_are_refused(client: FlaskClient,
                                                               job_id: str) -> None:
    doc = valid_job()
    del doc["id"]
    response = client.post(f"/job/{job_id}", json=doc, headers=BASIC)
    assert response.status_code == 400
    assert response.json["details"][0]["field"] == "id"
