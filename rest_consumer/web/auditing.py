"""``after_request``: every change that succeeded is written to the audit trail (who, what,
when, from where, and the job or user as it now is, without secrets or hashes). Which
requests are changes is ``policy``'s table: its ``change`` and ``admin`` routes."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException
from flask import Response, current_app, g, request

from rest_consumer.core import job_secrets
from rest_consumer.state.topics import TopicError
from rest_consumer.web.csrf import SAFE_METHODS
from rest_consumer.web.policy import rule_for

log = logging.getLogger(__name__)


def record_change(response: Response) -> Response:
    rule = rule_for(request.endpoint)
    if (rule is None or rule.action not in ("change", "admin") or request.method in SAFE_METHODS
            or not 200 <= response.status_code < 300 or "principal" not in g):
        return response
    record = _record(response)
    try:
        current_app.extensions["rest_consumer"]["audit"].write(record)
    except (TopicError, KafkaException) as e:
        log.error("audit record not written (%s): %s", e, record)
    return response


def _record(response: Response) -> dict[str, Any]:
    args = request.view_args or {}
    caller = g.principal
    record: dict[str, Any] = {
        "time": round(time.time(), 3), "who": caller.name, "role": caller.role,
        "action": str(request.endpoint).split(".")[-1], "method": request.method,
        "path": request.path, "from": request.remote_addr, "status": response.status_code,
        "job": args.get("job_id"), "user": args.get("name")}
    ext = current_app.extensions["rest_consumer"]
    if record["job"] is not None:
        job = ext["store"].find(record["job"])
        record["document"] = None if job is None else job_secrets.redact(job)
    elif record["user"] is not None:
        user = ext["users"].find(record["user"])
        record["document"] = None if user is None else user.shown()
    return record
