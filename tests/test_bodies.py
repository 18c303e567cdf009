"""Requests real systems accept (DESIGN §3b): JMESPath bodies, media types, forwarded Kafka
headers and answers checked with ``success_when``. FHIR is validated with ``fhir.resources``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.R4B.patient import Patient
from test_delivery import RETRY, loopback_sender, spec

from helpers import REPO
from rest_consumer.core.destinations import Allowlist
from rest_consumer.core.errors import MappingError, PermanentDeliveryError
from rest_consumer.core.jobs import validate
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.worker import execution

PATIENT_BODY = """{
  resourceType: 'Patient',
  id: msg.id,
  name: [{family: msg.family, given: msg.given}],
  telecom: msg.phones[].{system: 'phone', value: @},
  birthDate: msg.birth_date,
  gender: msg.gender
}"""


def job(**fields: Any) -> dict[str, Any]:
    return {"id": "fhir", "owner": "tests", "type": "PUT", "topic": ["people"],
            "datamap": {"id": "$.msg.id"}, "url": "http://127.0.0.1:8080/Patient/{id}",
            **fields}


def prepare(compiled: CompiledJob, record: dict[str, Any],
            headers: tuple[tuple[str, bytes | None], ...] = ()) -> Any:
    message = TaskMessage("people", 0, 7, b"key", b"{}", 1000, headers)
    return compiled.prepare(None, record, message.meta(0), "fhir:people:0:7:0").request


def test_a_fhir_patient_is_nested_has_no_null_and_validates() -> None:
    compiled = CompiledJob(job(body=PATIENT_BODY, content_type="application/fhir+json"))
    request = prepare(compiled, {"id": "p-1", "family": "Okafor", "given": ["Ada", "N."],
                                 "phones": ["+234 1 234", "+234 9 876"], "birth_date": None,
                                 "gender": "female"})
    body = json.loads(request.body)
    assert "birthDate" not in body and "null" not in request.body.decode()
    assert body["telecom"] == [{"system": "phone", "value": "+234 1 234"},
                               {"system": "phone", "value": "+234 9 876"}]
    assert Patient.model_validate(body).name[0].given == ["Ada", "N."]
    assert request.headers["Content-Type"] == "application/fhir+json"


def test_nulls_are_kept_when_the_job_asks() -> None:
    compiled = CompiledJob(job(body="{a: msg.a, b: [msg.a, data.id]}", body_nulls="keep"))
    assert json.loads(prepare(compiled, {"id": "x"}).body) == {"a": None, "b": [None, "x"]}


def test_a_form_body_is_a_flat_object_urlencoded() -> None:
    compiled = CompiledJob(job(body="{id: msg.id, ok: `true`, n: `3`}",
                               content_type="application/x-www-form-urlencoded"))
    request = prepare(compiled, {"id": "a b&c"})
    assert request.body == b"id=a+b%26c&ok=true&n=3"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    nested = CompiledJob(job(body="{id: {x: msg.id}}",
                             content_type="application/x-www-form-urlencoded"))
    with pytest.raises(MappingError, match="flat object"):
        prepare(nested, {"id": "a"})


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"body": "{a: msg.a"}, "body", "invalid JMESPath at position"),
    ({"body": "msg", "json_body": ["id"]}, "body", "not both"),
    ({"success_when": "body.status =="}, "success_when", "invalid JMESPath at position"),
    ({"content_type": "text/plain"}, "content_type", "JSON media type"),
    ({"forward_headers": ["Authorization"]}, "forward_headers.0", "not forwarded"),
    ({"forward_headers": ["content-length"]}, "forward_headers.0", "not forwarded"),
    ({"forward_headers": ["x-tenant"], "headers": {"X-Tenant": "t"}}, "forward_headers.0",
     "not forwarded"),
])
def test_a_bad_field_is_refused_at_save_by_name(fields: dict[str, Any], field: str,
                                               message: str) -> None:
    problems = validate(job(**fields))
    assert any(p["field"] == field and message in p["message"] for p in problems), problems


def test_traceparent_is_forwarded_by_default_and_globs_pick_more() -> None:
    headers = (("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
               ("ce_type", b"person.updated"), ("ce_id", b"1"), ("other", b"no"),
               ("ce_bad", b"line\nbreak"))
    plain = prepare(CompiledJob(job()), {"id": "x"}, headers)
    assert plain.headers["traceparent"].startswith("00-4bf9")
    assert "ce_type" not in plain.headers
    chosen = prepare(CompiledJob(job(forward_headers=["ce_*"])), {"id": "x"}, headers)
    assert {k: v for k, v in chosen.headers.items() if k.startswith("ce_")} == {
        "ce_type": "person.updated", "ce_id": "1"}
    assert "traceparent" not in chosen.headers and "other" not in chosen.headers


def test_a_200_that_says_error_fails_success_when(endpoint: Any) -> None:
    compiled = CompiledJob(job(success_when="body.status != 'ERROR'"))
    assert compiled.success_when is not None
    endpoint.respond = lambda request, seen: (200, {"Content-Type": "application/json"},
                                              b'{"status": "ERROR", "message": "bad uid"}')
    with pytest.raises(PermanentDeliveryError) as caught:
        loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY,
                               success_when=compiled.success_when)
    assert caught.value.status == 200 and "success_when" in caught.value.reason
    assert "bad uid" in caught.value.excerpt
    endpoint.respond = lambda request, seen: (200, {}, b'{"status": "OK"}')
    assert loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY,
                                  success_when=compiled.success_when) == 200


def test_success_when_reads_status_and_headers() -> None:
    check = CompiledJob(job(success_when="status == `201` && headers.location")).success_when
    assert check is not None
    assert check.holds(201, {"location": "/Patient/1"}, b"")
    assert not check.holds(200, {"location": "/Patient/1"}, b"")
    assert not check.holds(201, {}, b"not json")


EXAMPLES = REPO / "config" / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_every_shipped_example_is_a_valid_job(name: str) -> None:
    example = json.loads((EXAMPLES / name).read_text())
    hosts = Allowlist.parse(("fhir.example.org", "dhis2.example.org"))
    assert validate(example, hosts) == []


def test_the_shipped_fhir_example_sends_valid_patients() -> None:
    example = json.loads((EXAMPLES / "fhir-patient.json").read_text())
    request = prepare(CompiledJob(example), {"id": "p-2", "family": "Musa", "given": ["Ali"],
                                             "phones": [], "gender": "male"})
    patient = Patient.model_validate(json.loads(request.body))
    assert patient.id == "p-2" and patient.birthDate is None


def test_a_tombstone_is_skipped_or_deleted_as_the_job_says_and_a_letter_without() -> None:
    message = TaskMessage("people", 0, 9, b"p-9", None, 1000)
    for on_tombstone, expected in (("skip", ("skipped", None)), ("delete", (None, "DELETE"))):
        compiled = CompiledJob(job(datamap={"key": "$.meta.key"},
                                   url="http://127.0.0.1:8080/Patient/{key}",
                                   on_tombstone=on_tombstone))
        outcomes: list[Any] = []
        pending: list[Any] = []
        execution._prepare_tombstone(compiled, 0, message, outcomes, pending)
        kind = outcomes[0].kind if outcomes else None
        method = pending[0].request.method if pending else None
        assert (kind, method) == expected
    deleted = pending[0].request
    assert deleted.url.endswith("/Patient/p-9") and deleted.body is None
    assert "Content-Type" not in deleted.headers
    assert CompiledJob(job()).on_tombstone is None  # then a dead letter, as before
