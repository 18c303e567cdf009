"""API routes that operate a job: status, dead letters, preview, set_offset."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from confluent_kafka import KafkaException
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, Conflict, UnsupportedMediaType

from rest_consumer.core import tls
from rest_consumer.core.batches import Batcher
from rest_consumer.core.decoding import MAX_JSON_DEPTH, Decoded, decode, nesting_depth
from rest_consumer.core.errors import DecodeError, MappingError
from rest_consumer.core.jobs import setting
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Pending
from rest_consumer.state import health, heartbeat, keys, offsets, seeks, throughput
from rest_consumer.state.control import Command, publish
from rest_consumer.state.deadletterqueue import DeadLetterQueue
from rest_consumer.state.store import JobStore
from rest_consumer.web.status import job_state, reader_reports

operations = Blueprint("operations", __name__)

COUNTERS = ("dispatched", "delivered", "retried", "dead_lettered", "dead_letters_lost", "skipped",
            "responses", "responses_lost")
MAX_PAGE = 500


def _ext(name: str) -> Any:
    return current_app.extensions["rest_consumer"][name]


def _store() -> JobStore:
    store: JobStore = _ext("store")
    return store


def _json_object() -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def json_body() -> Any:
    """The request's JSON; 415 when it is not JSON, 400 when malformed or nested too deeply."""
    if not request.is_json:
        raise UnsupportedMediaType("send a JSON body (Content-Type: application/json)")
    try:
        body = request.get_json()
    except RecursionError:
        body = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = nesting_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


@operations.get("/job/<job_id>/status")
def status(job_id: str) -> Response:
    job = _store().get(job_id)
    client = _store().redis
    raw = client.hgetall(keys.counters(job_id))
    counts = {name: int(raw.get(name.encode(), 0)) for name in COUNTERS}
    last_error = client.get(keys.last_error(job_id))
    body: dict[str, Any] = {
        "id": job_id, **job_state(client, job), "counters": counts,
        "in_flight": heartbeat.in_flight(client, job_id),
        "set_offset": seeks.progress(client, job_id),
        "ordering": {"mode": setting(job, "ordering"), **heartbeat.held(client, job_id)},
        "last_error": json.loads(last_error) if last_error else None,
        "throughput": throughput.read(client, job_id),
        "readers": reader_reports(client, job_id),
    }
    body["endpoint"] = {**health.read(client, job_id),
                        "history": health.history(client, job_id)}
    if (certificates := tls.expiry_report(job.get("tls"))) is not None:
        body["tls"] = certificates
    try:
        body["partitions"] = offsets.partition_status(_ext("settings"), job)
    except KafkaException as e:
        body["partitions"], body["partitions_error"] = [], f"Kafka: {e}"
    return jsonify(body)


@operations.get("/job/<job_id>/dead_letters")
def list_dead_letters(job_id: str) -> Response:
    _store().get(job_id)
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    before = request.args.get("before")
    if before is not None and not before.isdigit():
        raise BadRequest("before must be a dead-letter id (a non-negative integer)")
    return jsonify(dead_letter_queue(job_id).page(limit, None if before is None else int(before)))


@operations.post("/job/<job_id>/dead_letters/replay")
def replay_dead_letters(job_id: str) -> Response:
    job = _store().get(job_id)
    ids = None
    if request.content_length:
        ids = _json_object().get("ids")
        if ids is not None and (not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
            raise BadRequest("ids must be a list of dead-letter ids (non-negative integers)")
    sent = dead_letter_queue(job_id).replay(_ext("dispatch"), job, ids)
    return jsonify(replayed=sent, count=len(sent))


@operations.delete("/job/<job_id>/dead_letters")
def purge_dead_letters(job_id: str) -> Response:
    _store().get(job_id)
    return jsonify(purged=dead_letter_queue(job_id).purge())


def dead_letter_queue(job_id: str) -> DeadLetterQueue:
    settings = _ext("settings")
    return DeadLetterQueue(_store().redis, settings.kafka_client_config(),
                           settings.consumer_group_prefix, job_id)


@operations.post("/job/<job_id>/preview")
def preview(job_id: str) -> Response:
    """The requests the job would send for a sample, by the worker's own way (no sending)."""
    job = CompiledJob(_store().get(job_id), _ext("settings"))
    decoded = _sample(_json_object())
    message = TaskMessage(job.job["topic"][0], 0, 0)
    shown = [_preview_record(job, message, decoded, index)
             for index in range(len(decoded.records))]
    if job.job.get("request_batch") is None:
        return jsonify(requests=[view for view, _ in shown])
    items = [item for _, item in shown if item is not None]
    batcher = Batcher(job.job["request_batch"], job.id, job.constant, job.ordered,
                      forwarding=job.forwarding)
    return jsonify(requests=[view for view, _ in shown], batches=[
        {"records": [m.index for m in batch.members], "request": batch.request.public(),
         **({"error": batch.failure} if batch.failure else {})}
        for batch in batcher.batches(items)])


def _preview_record(job: CompiledJob, message: TaskMessage, decoded: Decoded,
                    index: int) -> tuple[dict[str, Any], Pending | None]:
    """What one record would send, and the record as a batch would take it."""
    try:
        prepared = job.prepare(decoded.schema, decoded.records[index], message.meta(index),
                               message.idempotency_key(job.id, index))
    except MappingError as e:
        return {"index": index, "error": str(e)}, None
    except Exception as e:  # noqa: BLE001 - as in the worker: the record's own fault
        return {"index": index, "error": f"{type(e).__name__}: {e}"}, None
    if prepared.request is None:
        return {"index": index, "skipped": "the emit flag filters it out"}, None
    return ({"index": index, "request": prepared.request.public()},
            Pending(0, message, index, prepared.request, prepared.record_id))


def _sample(body: dict[str, Any]) -> Decoded:
    """A sample record; many with ``{"sample_records": [...]}``; or an Avro container."""
    samples = body.get("sample_records")
    if isinstance(samples, list) and len(body) == 1:
        return Decoded(None, samples)
    if "avro_base64" not in body:
        return Decoded(None, [body])
    try:
        raw = base64.b64decode(body["avro_base64"], validate=True)
        return decode(raw, _ext("settings").decode_limits)
    except (binascii.Error, TypeError, ValueError) as e:
        raise BadRequest(f"avro_base64 is not base64: {e}") from e
    except DecodeError as e:
        raise BadRequest(str(e)) from e


@operations.post("/job/<job_id>/set_offset/<offset>")
def set_offset(job_id: str, offset: str) -> tuple[Response, int]:
    job = _store().get(job_id)
    target: int | str = offset
    if offset not in ("earliest", "latest"):
        if not offset.isdigit():
            raise BadRequest("offset must be a non-negative integer, earliest or latest")
        target = int(offset)
    running = setting(job, "enabled") and reader_reports(_store().redis, job_id)
    if running:
        names = offsets.partition_names(_ext("settings"), job)
        asked = seeks.submit(_store().redis, job_id, target, names)
        publish(_store().redis, Command(job_id, "set_offset", job["hash"], target))
        return jsonify(id=job_id, offset=target, applied_by="readers",
                       generation=asked.generation, partitions=names), 202
    try:
        partitions = offsets.alter_group_offsets(_ext("settings"), job, target)
    except KafkaException as e:
        raise Conflict(f"Kafka refused to move the group's offsets ({e}); stop the job's "
                       "readers or start the job and try again") from e
    return jsonify(id=job_id, offset=target, applied_by="consumer group",
                   partitions=partitions), 200
