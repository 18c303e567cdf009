"""Hostile input at the API, table-driven: each case names its input and the field its 400
must name; no secret ever comes back, and nothing is stored. Data from Kafka has its own table
in test_hostile_data.py."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pytest
import redis
from flask.testing import FlaskClient

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.core.errors import ConfigError
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

SECRET = "tok-SECRET-hostile"
BASIC = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret-admin").decode()}


def api_job(**overrides: Any) -> dict[str, Any]:
    return valid_job(**{"url": "https://api.example.org/people/{id}", **overrides})


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


OAUTH = {"token_url": "https://auth.example.org/token", "client_id": "c",
         "client_secret": SECRET}


@dataclass(frozen=True)
class ApiCase:
    """``doc`` POSTed (after ``stored``, when given) must be refused with a 400 on ``field``."""

    name: str
    doc: Any
    field: str
    stored: dict[str, Any] | None = None
    details: dict[str, str] = field(default_factory=dict)


API_CASES = [
    ApiCase("credentials in URL userinfo",
            api_job(url="https://user:pw@api.example.org/{id}"), "url"),
    ApiCase("loopback literal", api_job(url="http://127.0.0.1/{id}"), "url"),
    ApiCase("cloud metadata address", api_job(url="http://169.254.169.254/latest/{id}"), "url"),
    ApiCase("IPv4-mapped loopback", api_job(url="http://[::ffff:127.0.0.1]/{id}"), "url"),
    ApiCase("CGNAT address", api_job(url="http://100.64.0.1/{id}"), "url"),
    ApiCase("NAT64 form of loopback", api_job(url="http://[64:ff9b::7f00:1]/{id}"), "url"),
    ApiCase("6to4 form of a private address", api_job(url="http://[2002:a00:1::1]/{id}"),
            "url"),
    ApiCase("unspecified address", api_job(url="http://0.0.0.0/{id}"), "url"),
    ApiCase("unique-local IPv6", api_job(url="http://[fd00::1]/{id}"), "url"),
    ApiCase("multicast address", api_job(url="http://224.0.0.1/{id}"), "url"),
    ApiCase("placeholder as scheme", api_job(url="{id}://api.example.org/"), "url"),
    ApiCase("placeholder as port", api_job(url="https://api.example.org:{id}/"), "url"),
    ApiCase("placeholder in userinfo", api_job(url="https://{id}@api.example.org/"), "url"),
    ApiCase("placeholder as the whole host", api_job(url="https://{id}/people"), "url"),
    ApiCase("dot segment in the path", api_job(url="https://api.example.org/a/../{id}"), "url"),
    ApiCase("internal token URL",
            api_job(oauth2={**OAUTH, "token_url": "http://127.0.0.1/token"}),
            "oauth2.token_url"),
    ApiCase("credentials in token URL",
            api_job(oauth2={**OAUTH, "token_url": "https://u:p@auth.example.org/t"}),
            "oauth2.token_url"),
    ApiCase("topic regex that does not compile", api_job(topic=["^("]), "topic.0"),
    ApiCase("mask_levels without emit_level", api_job(mask_levels=[0, 1]), "emit_level"),
    ApiCase("credentials in a static header",
            api_job(headers={"Authorization": f"Bearer {SECRET}"}), "headers.Authorization"),
    ApiCase("line break in a header template", api_job(headers={"X-A": "a\r\nX-Evil: 1"}),
            "headers.X-A"),
    ApiCase("kept token sent to a new host",
            api_job(url="https://evil.example.net/{id}", token="***"), "token",
            stored=api_job(token=SECRET)),
    ApiCase("kept token sent to a new port",
            api_job(url="https://api.example.org:8443/people/{id}", token="***"), "token",
            stored=api_job(token=SECRET)),
    ApiCase("kept password for a new user",
            api_job(basic_auth={"user": "mallory", "password": "***"}),
            "basic_auth.password", stored=api_job(basic_auth={"user": "u", "password": SECRET})),
    ApiCase("kept client secret for a new token URL",
            api_job(oauth2={**OAUTH, "token_url": "https://evil.example.net/t",
                            "client_secret": "***"}),
            "oauth2.client_secret", stored=api_job(oauth2=OAUTH)),
    ApiCase("kept secret header sent to a new host",
            api_job(url="https://evil.example.net/{id}", secret_headers={"X-Key": "***"}),
            "secret_headers.X-Key", stored=api_job(secret_headers={"X-Key": SECRET})),
    ApiCase("kept query secret sent to a new host",
            api_job(url="https://evil.example.net/{id}?api_key=***"), "url",
            stored=api_job(url=f"https://api.example.org/{{id}}?api_key={SECRET}")),
    ApiCase("secret of the wrong type is not echoed", api_job(token=[SECRET]), "token"),
    ApiCase("client secret of the wrong type is not echoed",
            api_job(oauth2={**OAUTH, "client_secret": {"v": SECRET}}), "oauth2.client_secret"),
    ApiCase("over-long secret header is not echoed",
            api_job(secret_headers={"X-Key": SECRET * 400}), "secret_headers.X-Key"),
    ApiCase("constant nested deeper than the limit", api_job(constant={"deep": nested(150)}),
            ""),
    # round 2
    ApiCase("data picks the registrable domain", api_job(url="https://{id}.com/x"), "url"),
    ApiCase("data picks a domain under a two-label suffix",
            api_job(url="https://{id}.co.uk/x"), "url"),
    ApiCase("data picks every label of the host", api_job(url="https://{id}.{name}/x"),
            "url"),
    ApiCase("data picks a name under a private suffix",
            api_job(url="https://{id}.github.io/x"), "url"),
    ApiCase("templated Host header", api_job(headers={"Host": "{id}"}), "headers.Host"),
    ApiCase("Content-Length header", api_job(headers={"Content-Length": "0"}),
            "headers.Content-Length"),
    ApiCase("Transfer-Encoding as a secret header",
            api_job(secret_headers={"Transfer-Encoding": "chunked"}),
            "secret_headers.Transfer-Encoding"),
    ApiCase("Connection header", api_job(headers={"connection": "close"}), "headers.connection"),
    ApiCase("Expect header", api_job(headers={"Expect": "100-continue"}), "headers.Expect"),
    ApiCase("a Proxy-* header", api_job(headers={"Proxy-Route": "x"}), "headers.Proxy-Route"),
    ApiCase("the project's jobs topic", api_job(topic=["rest-consumer.jobs"]), "topic.0"),
    ApiCase("a dead-letter topic", api_job(topic=["a", "rest-consumer.dlq.people"]),
            "topic.1"),
    ApiCase("a regex that can only match the project's topics",
            api_job(topic=["^rest-consumer\\..*"]), "topic.0"),
    ApiCase("a regex RE2 cannot run (backreference)", api_job(topic=["^(a)\\1"]), "topic.0"),
    ApiCase("IPv4-compatible loopback", api_job(url="http://[::127.0.0.1]/{id}"), "url"),
    ApiCase("IPv4-translated loopback", api_job(url="http://[::ffff:0:127.0.0.1]/{id}"),
            "url"),
    ApiCase("site-local IPv6", api_job(url="http://[fec0::1]/{id}"), "url"),
    ApiCase("kept path secret sent to a new host",
            api_job(url="https://evil.example.net/hooks/***/{id}"), "url",
            stored=api_job(url="https://hooks.example.org/hooks/T0A1B2C3D4E5F6G7H8/{id}")),
]


@pytest.fixture
def client(settings: Settings, real_redis: redis.Redis) -> FlaskClient:
    app = create_app(settings, store=JobStore(real_redis), kafka_ready=lambda: None)
    return app.test_client()


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_a_hostile_job_is_refused_with_its_field_and_no_secret(client: FlaskClient,
                                                               case: ApiCase) -> None:
    if case.stored is not None:
        assert client.post("/job/people", json=case.stored, headers=BASIC).status_code == 201
    before = client.get("/job/people", headers=BASIC)
    response = client.post("/job/people", json=case.doc, headers=BASIC)
    assert response.status_code == 400, response.json
    details = response.json["details"]
    if case.field:
        assert case.field in [p["field"] for p in details]
    else:  # refused before validation: the body itself
        assert isinstance(details, str) and "nest" in details
    assert SECRET not in response.get_data(as_text=True)
    after = client.get("/job/people", headers=BASIC)
    assert (after.status_code, after.get_data()) == (before.status_code, before.get_data())


def test_json_nested_too_deeply_is_a_400_not_a_500(client: FlaskClient) -> None:
    for body in ("[" * 100_000 + "]" * 100_000, json.dumps(nested(500))):
        response = client.post("/job/people", data=body,
                               headers={**BASIC, "Content-Type": "application/json"})
        assert response.status_code == 400
        assert "nest" in response.json["details"]


def test_secrets_outside_the_secret_fields_are_redacted_and_kept(
        client: FlaskClient, real_redis: redis.Redis) -> None:
    doc = api_job(url=f"https://api.example.org/{{id}}?api_key={SECRET}&page=1",
                  secret_headers={"X-Api-Key": SECRET}, token=SECRET)
    client.post("/job/people", json=doc, headers=BASIC)
    shown = client.get("/job/people", headers=BASIC)
    assert SECRET not in shown.get_data(as_text=True)
    assert shown.json["url"] == "https://api.example.org/{id}?api_key=***&page=1"
    assert shown.json["secret_headers"] == {"X-Api-Key": "***"}
    preview = client.post("/job/people/preview", json={"id": "x", "name": "n"}, headers=BASIC)
    request = preview.json["requests"][0]["request"]
    assert SECRET not in preview.get_data(as_text=True)
    assert request["url"] == "https://api.example.org/x?api_key=***&page=1"
    assert request["headers"]["X-Api-Key"] == "***"
    # Sent back as shown, every secret is kept
    assert client.post("/job/people", json=shown.json, headers=BASIC).status_code == 200
    stored = JobStore(real_redis).get("people")
    assert SECRET in stored["url"] and stored["secret_headers"]["X-Api-Key"] == SECRET


def test_preview_caps_what_a_container_may_expand_to(client: FlaskClient) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [{"s": "a" * (20 * 1024 * 1024)}], codec="deflate")
    assert len(buffer.getvalue()) < 100_000  # a bomb: tiny on the wire
    client.post("/job/people", json=api_job(), headers=BASIC)
    body = {"avro_base64": base64.b64encode(buffer.getvalue()).decode()}
    response = client.post("/job/people/preview", json=body, headers=BASIC)
    assert response.status_code == 400 and "DECODE_MAX_BYTES" in response.json["details"]


def test_readiness_names_no_internal_host_without_credentials(settings: Settings,
                                                                real_redis: redis.Redis) -> None:
    def down() -> None:
        raise ConnectionError("kafka-internal.corp:9092 refused")

    app = create_app(settings, store=JobStore(real_redis), kafka_ready=down)
    anonymous = app.test_client().get("/readyz")
    assert anonymous.status_code == 503 and anonymous.json == {"status": "not ready"}
    assert "kafka-internal" in app.test_client().get("/readyz", headers=BASIC).json["checks"][
        "kafka"]


@pytest.mark.parametrize("credentials,problem", [
    ({"api_user": "admin", "api_password": "change-me"}, "known default"),
    ({"api_user": "admin", "api_password": "short-pw"}, "at least 12"),
    ({"api_token": "tok-short"}, "at least 16"),
    ({}, "needs credentials"),
], ids=["shipped example password", "short password", "short token", "no credentials"])
def test_the_api_refuses_to_start_with_weak_credentials(
        credentials: dict[str, str], problem: str, real_redis: redis.Redis) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        create_app(Settings(**credentials), store=JobStore(real_redis))
    assert credentials.get("api_password", "§") not in str(refused.value)
