"""Many records in one request (``request_batch``) and each record's outcome read back
(``item_results``): FHIR batch Bundles read per entry, DHIS2 imports read by uid."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from rest_consumer.core.batches import Batch, Batcher
from rest_consumer.core.errors import PermanentDeliveryError
from rest_consumer.core.jobs import validate
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending

BUNDLE_WRAP = ("{resourceType: 'Bundle', type: 'batch', entry: records[].{resource: @, "
               "request: {method: 'PUT', url: join('', ['Patient/', id])}}}")
PATIENT = "{resourceType: 'Patient', id: msg.id, name: [{family: msg.family}]}"
DHIS2 = ("{trackedEntity: msg.uid, orgUnit: constant.org_unit, trackedEntityType: 'Person', "
         "attributes: [{attribute: 'w75KJ2mc4zz', value: msg.first}, "
         "{attribute: 'zDhUuAYrxNC', value: msg.last}][?value]}")


def job(**fields: Any) -> dict[str, Any]:
    return {"id": "batched", "owner": "tests", "type": "POST", "topic": ["people"],
            "datamap": {"id": "$.msg.id", "uid": "$.msg.uid"},
            "url": "http://127.0.0.1:8080/api", **fields}


def pending(compiled: CompiledJob, records: list[dict[str, Any]]) -> list[Pending]:
    items = []
    for i, record in enumerate(records):
        trace = f"00-{i:032x}-{i:016x}-01".encode()  # every message its own trace
        message = TaskMessage("people", 0, i, None, b"{}", 1000, (("traceparent", trace),))
        prepared = compiled.prepare(None, record, message.meta(0),
                                    message.idempotency_key(compiled.id, 0))
        assert prepared.request is not None
        items.append(Pending(i, message, 0, prepared.request, prepared.record_id, None,
                             prepared.values))
    return items


def batcher(compiled: CompiledJob) -> Batcher:
    return Batcher(compiled.job["request_batch"], compiled.id, compiled.constant,
                   compiled.ordered, compiled.job.get("item_results"),
                   compiled.retry_statuses, compiled.max_retries, compiled.forwarding)


def delivered(batch: Batch, status: int, body: Any) -> Outcome:
    return Outcome(-1, "delivered", answer=(status, {}, json.dumps(body).encode()))


def test_twenty_patients_make_one_valid_fhir_batch_bundle() -> None:
    compiled = CompiledJob(job(body=PATIENT, content_type="application/fhir+json",
                               request_batch={"wrap": BUNDLE_WRAP}))
    records = [{"id": f"p{i}", "family": f"F{i}"} for i in range(20)]
    batches = batcher(compiled).batches(pending(compiled, records))
    assert len(batches) == 1  # their traceparents differ: forwarded headers do not split
    assert batches[0].request.headers["traceparent"] == f"00-{0:032x}-{0:016x}-01"
    bundle = Bundle.model_validate(json.loads(batches[0].request.body))
    assert [e.request.url for e in bundle.entry] == [f"Patient/p{i}" for i in range(20)]
    assert batches[0].request.headers["Content-Type"] == "application/fhir+json"


def test_batches_hold_max_records_and_max_bytes_and_keep_their_key_on_retry() -> None:
    compiled = CompiledJob(job(json_body=["id"], request_batch={"max_records": 3}))
    items = pending(compiled, [{"id": f"r{i}"} for i in range(7)])
    batches = batcher(compiled).batches(items)
    assert [len(b.members) for b in batches] == [3, 3, 1]
    assert json.loads(batches[0].request.body) == [{"id": "r0"}, {"id": "r1"}, {"id": "r2"}]
    again = batcher(compiled).batches(items)
    assert [b.request.headers["Idempotency-Key"] for b in batches] == [
        b.request.headers["Idempotency-Key"] for b in again]
    small = CompiledJob(job(json_body=["id"], request_batch={"max_bytes": 1024}))
    big = pending(small, [{"id": "x" * 400} for _ in range(5)])
    assert [len(b.members) for b in batcher(small).batches(big)] == [2, 2, 1]


def test_the_default_wrap_joins_the_bodies_into_the_bytes_the_expression_gives() -> None:
    compiled = CompiledJob(job(datamap={"id": "$.msg.id", "at": "$.msg.at", "n": "$.msg.n"},
                               json_body=["id", "at", "n"], request_batch={}))
    records = [{"id": "é\u2028\"", "at": None, "n": 1.5e300}, {"id": "b", "n": [1, {"x": 2}]}]
    joined = batcher(compiled).batches(pending(compiled, records))[0].request.body
    wrapped = CompiledJob(job(datamap={"id": "$.msg.id", "at": "$.msg.at", "n": "$.msg.n"},
                              json_body=["id", "at", "n"], request_batch={"wrap": "records[*]"}))
    assert joined == batcher(wrapped).batches(pending(wrapped, records))[0].request.body
    assert json.loads(joined)[0] == {"id": "é\u2028\"", "at": None, "n": 1.5e300}


def test_records_for_other_urls_go_in_other_batches() -> None:
    compiled = CompiledJob(job(url="http://127.0.0.1:8080/{uid}", json_body=["id"],
                               request_batch={}))
    items = pending(compiled, [{"id": "a", "uid": "u1"}, {"id": "b", "uid": "u2"},
                               {"id": "c", "uid": "u1"}])
    batches = batcher(compiled).batches(items)
    assert [[m.record_id for m in b.members] for b in batches] == [["a", "c"], ["b"]]


def test_ndjson_is_one_body_per_line() -> None:
    compiled = CompiledJob(job(json_body=["id"], request_batch={"format": "ndjson"}))
    batch = batcher(compiled).batches(pending(compiled, [{"id": "a"}, {"id": "b"}]))[0]
    assert batch.request.body == b'{"id": "a"}\n{"id": "b"}\n'
    assert batch.request.headers["Content-Type"] == "application/x-ndjson"


def test_a_bundle_answer_is_read_per_entry() -> None:
    compiled = CompiledJob(job(body=PATIENT, request_batch={"wrap": BUNDLE_WRAP},
                               item_results={"items": "body.entry",
                                             "ok": "starts_with(response.status, '2')"}))
    b = batcher(compiled)
    batch = b.batches(pending(compiled, [{"id": f"p{i}", "family": "F"} for i in range(3)]))[0]
    answer = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"response": {"status": "201 Created"}},
        {"response": {"status": "400 Bad Request", "outcome": {"issue": [{"code": "value"}]}}},
        {"response": {"status": "503 Service Unavailable"}}]}
    outcomes = b.outcomes(batch, delivered(batch, 200, answer))
    assert [(m.record_id, o.kind) for m, o in outcomes] == [
        ("p0", "delivered"), ("p1", "dead"), ("p2", "retry")]
    dead = outcomes[1][1]
    assert "400 Bad Request" in dead.reason and dead.error is not None
    assert dead.request is not None and json.loads(dead.request.body)["id"] == "p1"


def test_a_dhis2_import_is_read_by_uid_and_absent_attributes_are_left_out() -> None:
    compiled = CompiledJob(job(body=DHIS2, constant={"org_unit": "DiszpKrYNg8"},
                               request_batch={"wrap": "{trackedEntities: records}"},
                               item_results={"errors": "body.validationReport.errorReports[*].uid",
                                             "key": "uid"}))
    b = batcher(compiled)
    records = [{"id": str(i), "uid": f"uid{i}", "first": "A", "last": None if i else "Z"}
               for i in range(60)]
    batches = b.batches(pending(compiled, records))
    assert len(batches) == 1 and len(batches[0].members) == 60
    sent = json.loads(batches[0].request.body)["trackedEntities"]
    assert sent[0]["attributes"] == [{"attribute": "w75KJ2mc4zz", "value": "A"},
                                     {"attribute": "zDhUuAYrxNC", "value": "Z"}]
    assert sent[1]["attributes"] == [{"attribute": "w75KJ2mc4zz", "value": "A"}]
    answer = {"status": "ERROR", "validationReport": {"errorReports": [
        {"uid": "uid7", "message": "bad org unit"}, {"uid": "uid42"}]}}
    outcomes = b.outcomes(batches[0], delivered(batches[0], 200, answer))
    assert [m.record_id for m, o in outcomes if o.kind == "dead"] == ["7", "42"]
    assert sum(o.kind == "delivered" for _, o in outcomes) == 58


def test_a_batch_that_fails_fails_for_each_record() -> None:
    compiled = CompiledJob(job(json_body=["id"], request_batch={}))
    b = batcher(compiled)
    batch = b.batches(pending(compiled, [{"id": "a"}, {"id": "b"}]))[0]
    retry = Outcome(-1, "retry", "HTTP 503", failed=True, retry_after=2.0)
    assert [(o.index, o.kind, o.retry_after) for _, o in b.outcomes(batch, retry)] == [
        (0, "retry", 2.0), (0, "retry", 2.0)]


def test_each_record_keeps_every_field_of_its_batchs_outcome_but_its_own() -> None:
    # Built field by field for speed: a field added to Outcome must be carried over too.
    compiled = CompiledJob(job(json_body=["id"], request_batch={}))
    b = batcher(compiled)
    batch = b.batches(pending(compiled, [{"id": "a"}]))[0]
    error = PermanentDeliveryError("HTTP 400", 400, "bad", b"bad")
    whole = Outcome(-1, "dead", "HTTP 400", error, batch.request, None, 3.0, True, 0.25,
                    (400, {}, b"bad"))
    [(member, outcome)] = b.outcomes(batch, whole)
    own = {"index": member.index, "record_id": member.record_id, "request": member.request,
           "answer": None}  # answers only for jobs with ``responses``
    for f in dataclasses.fields(Outcome):
        assert getattr(outcome, f.name) == own.get(f.name, getattr(whole, f.name)), f.name


def test_batch_fields_are_checked_at_save() -> None:
    def fields_of(**fields: Any) -> set[str]:
        return {p["field"] for p in validate(job(**fields))}

    assert "request_batch" in fields_of(request_batch={})
    assert "request_batch.wrap" in fields_of(json_body=["id"], request_batch={"wrap": "{a:"})
    assert "item_results" in fields_of(json_body=["id"], item_results={"errors": "a",
                                                                       "key": "uid"})
    assert "item_results" in fields_of(json_body=["id"], request_batch={},
                                       item_results={"errors": "a"})
    assert "item_results.key" in fields_of(json_body=["id"], request_batch={},
                                           item_results={"errors": "a", "key": "nope"})
    assert "request_batch" in fields_of(body="{id: msg.id}", request_batch={},
                                        content_type="application/x-www-form-urlencoded")


def test_a_wrap_that_fails_makes_each_record_a_dead_letter_not_a_crash() -> None:
    compiled = CompiledJob(job(json_body=["id"], request_batch={"wrap": "abs(records)"}))
    b = batcher(compiled)
    batch = b.batches(pending(compiled, [{"id": "a"}, {"id": "b"}]))[0]
    assert batch.failure is not None and "request_batch.wrap failed" in batch.failure
    assert [(o.kind, o.reason) for _, o in b.unsendable(batch)] == [
        ("dead", batch.failure), ("dead", batch.failure)]
