"""Requests real systems accept, end to end (real Kafka, Redis, reader, worker): a DHIS2
tracker import and a FHIR batch Bundle, each against a stand-in that enforces its format, a
tombstone as a DELETE, and the answers read back from the responses topic."""

from __future__ import annotations

import json
from typing import Any

import redis
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from test_batches import BUNDLE_WRAP, DHIS2, PATIENT
from test_pipeline import committed, counters, dead_letters

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.state import topics
from rest_consumer.state.responses import topic_name as responses_topic
from rest_consumer.state.store import JobStore


def import_job(endpoint: Any, topic: str, **fields: Any) -> dict[str, Any]:
    return {"id": "people", "owner": "tests", "type": "POST", "topic": [topic],
            "datamap": {"id": "$.msg.uid", "uid": "$.msg.uid"},
            "url": endpoint.url + "/api/tracker", "retry_backoff": 0.2,
            "retry_backoff_max": 1, **fields}


def test_a_dhis2_import_goes_in_at_most_two_requests_and_reported_uids_are_dead_letters(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given 60 people waiting in Kafka, and a DHIS2 stand-in that refuses two of them by uid
    topic = "requests.dhis2"
    pipeline.create_topic(topic)
    bad = {"uid7", "uid42"}

    def dhis2(request: Any, seen: int) -> Any:
        entities = request.json()["trackedEntities"]
        assert all(a["value"] is not None for e in entities for a in e["attributes"])
        errors = [{"uid": e["trackedEntity"], "message": "E1064"} for e in entities
                  if e["trackedEntity"] in bad]
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"status": "ERROR" if errors else "OK",
             "validationReport": {"errorReports": errors}}).encode()

    endpoint.respond = dhis2
    JobStore(real_redis, LOOPBACK).upsert("people", import_job(
        endpoint, topic, body=DHIS2, constant={"org_unit": "DiszpKrYNg8"},
        request_batch={"wrap": "{trackedEntities: records}"},
        item_results={"errors": "body.validationReport.errorReports[*].uid", "key": "uid"}))
    pipeline.produce(topic, [json.dumps({"uid": f"uid{i}", "first": f"F{i}",
                                         "last": None if i % 2 else "L"}).encode()
                             for i in range(60)])
    # When the pipeline runs
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: len(dead_letters(pipeline, real_redis)) == 2, 60, what="two dead letters")
    wait_for(lambda: committed(real_redis), 30, what="everything final")
    # Then 60 records went in at most two requests, each entity once, and the two the server
    # reported are dead letters with its answer; the others are delivered
    assert len(endpoint.received) <= 2
    sent = [e["trackedEntity"] for r in endpoint.received for e in r.json()["trackedEntities"]]
    assert sorted(sent) == sorted(f"uid{i}" for i in range(60))
    letters = dead_letters(pipeline, real_redis)
    assert {letter["record_id"] for letter in letters} == bad
    assert all("E1064" in letter["excerpt"] for letter in letters)
    assert counters(real_redis)["delivered"] == 58


def test_a_fhir_batch_bundle_is_read_per_entry_and_no_accepted_entry_is_sent_twice(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given 20 patients, and a FHIR server stand-in that validates each Bundle, refuses one
    # entry for good and answers 503 for another the first time
    topic = "requests.fhir"
    pipeline.create_topic(topic)

    def fhir(request: Any, seen: int) -> Any:
        bundle = Bundle.model_validate(request.json())
        assert "null" not in request.body.decode()
        statuses = []
        for entry in bundle.entry:
            patient = entry.resource.id
            if patient == "p3":
                statuses.append("422 Unprocessable Entity")
            elif patient == "p5" and seen == 0:
                statuses.append("503 Service Unavailable")
            else:
                statuses.append("201 Created")
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(
            {"resourceType": "Bundle", "type": "batch-response",
             "entry": [{"response": {"status": s}} for s in statuses]}).encode()

    endpoint.respond = fhir
    JobStore(real_redis, LOOPBACK).upsert("people", import_job(
        endpoint, topic, datamap={"id": "$.msg.id"}, body=PATIENT,
        content_type="application/fhir+json", request_batch={"wrap": BUNDLE_WRAP},
        item_results={"items": "body.entry", "ok": "starts_with(response.status, '2')"}))
    pipeline.produce(topic, [json.dumps({"id": f"p{i}", "family": f"F{i}"}).encode()
                             for i in range(20)])
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: counters(real_redis).get("delivered") == 19, 60, what="19 delivered")
    wait_for(lambda: committed(real_redis), 30, what="everything final")
    # Then p3 is a dead letter with its entry's answer, p5 went again alone and was
    # accepted, and no entry the server accepted was sent twice
    sent = [e["resource"]["id"] for r in endpoint.received for e in r.json()["entry"]]
    assert sorted(sent) == sorted([f"p{i}" for i in range(20)] + ["p5"])
    letters = dead_letters(pipeline, real_redis)
    assert [letter["record_id"] for letter in letters] == ["p3"]
    assert "422" in letters[0]["reason"]
    assert counters(real_redis)["delivered"] == 19


def test_a_tombstone_becomes_a_delete_of_its_key(pipeline: Any, endpoint: Any,
                                                 real_redis: redis.Redis) -> None:
    # Given a job that deletes on tombstones, a person and then its tombstone (same key)
    topic = "requests.tombstone"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", import_job(
        endpoint, topic, type="PUT", datamap={"id": "$.msg.id", "key": "$.meta.key"},
        url=endpoint.url + "/people/{key}", json_body=["id"], on_tombstone="delete"))
    pipeline.produce(topic, [json.dumps({"id": "p1"}).encode()], key=b"p1")
    pipeline.produce(topic, [None], key=b"p1")
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: len(endpoint.received) == 2, 60, what="the PUT and the DELETE")
    wait_for(lambda: committed(real_redis), 30, what="everything final")
    # Then the tombstone went as a DELETE of its key, without a body, and nothing is a letter
    assert sorted((r.method, r.path, r.body) for r in endpoint.received) == [
        ("DELETE", "/people/p1", b""), ("PUT", "/people/p1", b'{"id": "p1"}')]
    assert dead_letters(pipeline, real_redis) == []


def responses(pipeline: Any, job_id: str = "people") -> list[Any]:
    """The job's responses topic, oldest first, read from Kafka."""
    prefix = pipeline.env["CONSUMER_GROUP_PREFIX"]
    consumer = topics.reader(pipeline.kafka_config)
    try:
        topic = responses_topic(prefix, job_id)
        _, high = topics.watermarks(consumer, topic)
        return list(topics.read_range(consumer, topic, None, high))
    finally:
        consumer.close()


def test_a_fhir_servers_answers_are_read_back_from_the_responses_topic(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a job writing every response, and a FHIR server stand-in that assigns each
    # Patient an id and refuses one with an OperationOutcome
    topic = "requests.responses"
    pipeline.create_topic(topic)

    def fhir(request: Any, seen: int) -> Any:
        patient = Patient.model_validate(request.json())
        if patient.id == "p2":
            return 422, {"Content-Type": "application/fhir+json"}, json.dumps(
                {"resourceType": "OperationOutcome",
                 "issue": [{"severity": "error", "code": "invalid"}]}).encode()
        return 201, {"Content-Type": "application/fhir+json"}, json.dumps(
            {"resourceType": "Patient", "id": f"srv-{patient.id}"}).encode()

    endpoint.respond = fhir
    JobStore(real_redis, LOOPBACK).upsert("people", import_job(
        endpoint, topic, datamap={"id": "$.msg.id"}, body=PATIENT, responses="all",
        url=endpoint.url + "/fhir/Patient?secret=s3cr3t-in-url",
        content_type="application/fhir+json"))
    pipeline.produce(topic, [json.dumps({"id": f"p{i}", "family": f"F{i}"}).encode()
                             for i in range(4)], key=b"k")
    # When the pipeline runs
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: committed(real_redis), 60, what="everything final")
    # Then each record's answer is in the responses topic, keyed as its source, with what
    # it answers in the headers: the ids the server assigned, and the refusal
    found = {}
    for record in responses(pipeline):
        headers = {k: (v or b"").decode() for k, v in record.headers() or []}
        found[json.loads(headers["__rest_consumer.record_id"])] = (record.key(), headers,
                                                                   json.loads(record.value()))
    assert sorted(found) == ["p0", "p1", "p2", "p3"]
    key, headers, answer = found["p1"]
    assert key == b"k" and answer == {"resourceType": "Patient", "id": "srv-p1"}
    assert headers["__rest_consumer.status"] == "201"
    assert headers["__rest_consumer.outcome"] == "delivered"
    assert headers["__rest_consumer.topic"] == topic
    assert headers["__rest_consumer.attempts"] == "1"
    assert float(headers["__rest_consumer.latency_ms"]) > 0
    assert "s3cr3t" not in headers["__rest_consumer.url"]
    _, headers, answer = found["p2"]
    assert headers["__rest_consumer.outcome"] == "dead_letter"
    assert headers["__rest_consumer.status"] == "422"
    assert answer["resourceType"] == "OperationOutcome"
    assert counters(real_redis)["responses"] == 4


def test_a_batchs_responses_carry_each_records_own_item(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given a FHIR batch Bundle job that writes only its errors, and a server refusing one entry
    topic = "requests.bundle_responses"
    pipeline.create_topic(topic)

    def fhir(request: Any, seen: int) -> Any:
        bundle = Bundle.model_validate(request.json())
        entries = [{"response": {"status": "400 Bad Request" if e.resource.id == "p1"
                                 else "201 Created", "location": f"Patient/{e.resource.id}"}}
                   for e in bundle.entry]
        return 200, {}, json.dumps({"resourceType": "Bundle", "type": "batch-response",
                                    "entry": entries}).encode()

    endpoint.respond = fhir
    JobStore(real_redis, LOOPBACK).upsert("people", import_job(
        endpoint, topic, datamap={"id": "$.msg.id"}, body=PATIENT, responses="errors",
        request_batch={"wrap": BUNDLE_WRAP},
        item_results={"items": "body.entry", "ok": "starts_with(response.status, '2')"}))
    pipeline.produce(topic, [json.dumps({"id": f"p{i}", "family": "F"}).encode()
                             for i in range(5)])
    pipeline.start_worker()
    pipeline.start_reader()
    wait_for(lambda: committed(real_redis), 60, what="everything final")
    # Then only the refused record has a response, and its value is its own entry
    written = responses(pipeline)
    assert len(written) == 1
    assert json.loads(written[0].value()) == {
        "response": {"status": "400 Bad Request", "location": "Patient/p1"}}
    assert len(endpoint.received) == 1
