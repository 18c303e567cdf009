"""The OpenAPI document is valid, and fuzzing the API against it finds no server error."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from rest_consumer.core.config import Settings
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app
from rest_consumer.web.openapi import openapi_document

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret-admin").decode()}


def test_the_openapi_document_is_valid_openapi() -> None:
    validate(openapi_document())


def test_every_route_is_documented(settings: Settings, fake_redis: Any) -> None:
    app = create_app(settings, store=JobStore(fake_redis), kafka_ready=lambda: None)
    documented = {path.replace("{", "<").replace("}", ">")
                  for path in openapi_document()["paths"]}
    routed = {rule.rule.replace("<job_id>", "<job_id>") for rule in app.url_map.iter_rules()
              if not rule.endpoint.endswith("static")}  # files, not routes
    assert routed == documented


def _fuzz_app() -> Any:
    import fakeredis

    return create_app(Settings(api_user="admin", api_password="s3cret-admin"),
                      store=JobStore(fakeredis.FakeRedis()), kafka_ready=lambda: None,
                      load_files=False)


schema = schemathesis.openapi.from_wsgi("/openapi.json", _fuzz_app(), headers=AUTH)


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_the_api_finds_no_server_error(case: Any) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, response.text
