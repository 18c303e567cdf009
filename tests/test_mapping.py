"""Datamap semantics and request building."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from conftest import valid_job
from rest_consumer.core.errors import MappingError
from rest_consumer.core.mapping import CompiledJob, RequestSpec

META = {"topic": "t", "partition": 0, "offset": 7, "key": None, "timestamp": 1,
        "headers": {}, "index": 2}
SCHEMA = {"name": "Person"}


def compiled(**overrides: Any) -> CompiledJob:
    return CompiledJob({**valid_job(**overrides), "hash": "h"})


def request_for(job: CompiledJob, schema: Any, record: Any) -> RequestSpec:
    prepared = job.prepare(schema, record, META, "people:t:0:7:2")
    assert prepared.request is not None
    return prepared.request


def test_no_match_is_absent_one_is_a_value_several_a_list() -> None:
    job = compiled(datamap={"missing": "$.msg.nope", "one": "$.msg.a",
                            "many": "$.msg.items[*].v"}, url="http://h/", json_body=[],
                   query_params=[])
    values = job.evaluate(None, {"a": 1, "items": [{"v": 1}, {"v": 2}]}, META)
    assert values == {"one": 1, "many": [1, 2]}


def test_schema_constant_and_meta_are_in_the_document() -> None:
    job = compiled(datamap={"s": "$.schema.name", "c": "$.constant.tenant",
                            "o": "$.meta.offset"}, constant={"tenant": "x"},
                   url="http://h/", json_body=[], query_params=[])
    assert job.evaluate(SCHEMA, {}, META) == {"s": "Person", "c": "x", "o": 7}


def test_extended_jsonpath_filters_work() -> None:
    job = compiled(datamap={"adults": "$.msg.people[?(@.age >= 18)].name"}, url="http://h/",
                   json_body=[], query_params=[])
    record = {"people": [{"name": "a", "age": 20}, {"name": "b", "age": 3}]}
    assert job.evaluate(None, record, META) == {"adults": "a"}


def test_the_request_follows_the_job() -> None:
    job = compiled(constant={"tenant": "t 1"}, url="http://h:8/{tenant}/p/{id}?fixed=1",
                   headers={"X-Id": "{id}"}, token="tk", token_scheme="access_token")
    request = request_for(job, SCHEMA, {"id": "a/b?c", "name": "N"})
    assert request.method == "POST"
    assert request.url == "http://h:8/t%201/p/a%2Fb%3Fc?fixed=1&schema_name=Person"
    assert request.headers == {"X-Id": "a/b?c", "Idempotency-Key": "people:t:0:7:2",
                               "Content-Type": "application/json"}
    assert request.secret_headers == {"Authorization": "access_token tk"}
    assert json.loads(request.body or b"") == {"id": "a/b?c", "name": "N"}
    assert request.public()["headers"]["Authorization"] == "***"


def test_query_params_and_body_take_only_present_keys() -> None:
    job = compiled(json_body=["id", "name"], query_params=["schema_name", "name"])
    request = request_for(job, None, {"id": "x"})
    assert request.url == "http://api.example.org/people/x"
    assert json.loads(request.body or b"") == {"id": "x"}


def test_a_missing_url_value_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match=r"url placeholder \{id\} has no value"):
        request_for(compiled(), None, {"name": "x"})


def test_a_header_value_cannot_inject_a_line() -> None:
    job = compiled(headers={"X-Name": "{name}"})
    with pytest.raises(MappingError, match="line break"):
        request_for(job, None, {"id": "x", "name": "a\r\nEvil: 1"})


@pytest.mark.parametrize("auth,expected", [
    ({"basic_auth": {"user": "u", "password": "p"}}, "Basic " + base64.b64encode(b"u:p").decode()),
    ({"basic_auth": {"user": "u", "pw": "q"}}, "Basic " + base64.b64encode(b"u:q").decode()),
    ({"token": "t"}, "Bearer t"),
])
def test_auth_headers(auth: dict[str, Any], expected: str) -> None:
    request = request_for(compiled(**auth), None, {"id": "x"})
    assert request.secret_headers == {"Authorization": expected}
    assert "Authorization" not in request.headers


def test_a_get_without_json_body_has_no_body() -> None:
    job = CompiledJob({k: v for k, v in valid_job(type="GET").items() if k != "json_body"})
    request = request_for(job, None, {"id": "x"})
    assert request.body is None and "Content-Type" not in request.headers


@pytest.mark.parametrize("path", ["$.msg.id", "$.msg.household.id", "$.msg.missing.deeper",
                                  "$.msg.tags", "$.msg.list.id", "$.schema.name"])
def test_the_plain_path_fast_lane_agrees_with_jsonpath_ng(path: str) -> None:
    from jsonpath_ng.ext import parse

    from rest_consumer.core.mapping import compile_path

    document = {"schema": {"name": "Person"}, "msg": {
        "id": "x", "household": {"id": "h"}, "tags": ["a", "b"], "list": [{"id": 1}],
        "missing": None}}
    assert compile_path(path)(document) == [m.value for m in parse(path).find(document)]
