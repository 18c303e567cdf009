"""The API described in OpenAPI 3.1 (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Map

from rest_consumer import __version__
from rest_consumer.core import jobs
from rest_consumer.web import policy

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid request", 401: "missing or wrong credentials",
            403: "the caller's role may not do this, or a browser's request not from the "
                 "console (cross-site request forgery)",
            404: "no such job (or one of an owner the caller does not have)",
            413: "body too large", 415: "body is not JSON", 429: "too many failed logins",
            503: "Redis unavailable"}
    return {str(code): _json(_ERROR, text[code]) for code in codes}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


def _job_paths() -> dict[str, Any]:
    job = {"$ref": "#/components/schemas/JobView"}
    job_list = {"type": "array", "items": job}
    upsert_body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Job"}}}}
    return {
        "/jobs": {"get": _op("All jobs with their state",
                             {"200": _json(job_list, "jobs"), **_errors(401)})},
        "/jobs/{owner}": {"get": _op(
            "One owner's jobs", {"200": _json(job_list, "jobs"), **_errors(401)},
            parameters=[{"name": "owner", "in": "path", "required": True,
                         "schema": {"type": "string"}}])},
        "/job/{job_id}": {
            "parameters": [_JOB_ID],
            "get": _op("One job, secrets shown as \"***\"",
                       {"200": _json(job, "the job"), **_errors(401, 404)}),
            "post": _op("Create or replace a job; \"***\" in a secret keeps the stored one",
                        {"200": _json(job, "updated"), "201": _json(job, "created"),
                         **_errors(400, 401, 403, 413, 415)}, requestBody=upsert_body),
            "delete": _op("Delete a job; its reader threads stop",
                          {"200": _json({"type": "object"}, "deleted"),
                           **_errors(401, 403, 404)}),
        },
        "/job/{job_id}/start": {"parameters": [_JOB_ID], "post": _op(
            "Enable a job", {"200": _json(job, "the job"), **_errors(401, 403, 404)})},
        "/job/{job_id}/stop": {"parameters": [_JOB_ID], "post": _op(
            "Disable a job", {"200": _json(job, "the job"), **_errors(401, 403, 404)})},
    }


_OFFSET = {"name": "offset", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^([0-9]+|earliest|latest)$"}}
_REPLAY_BODY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"ids": {
        "type": "array", "items": {"type": "integer", "minimum": 0}}}}}}}
_PREVIEW_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "a sample record, {\"sample_records\": [records]} (a batch "
    "job's answer adds the batches they make), or {\"avro_base64\": …}"}}}}
_PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                "maximum": 500}},
    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}}]


def _operation_paths() -> dict[str, Any]:
    anything = {"type": "object"}
    return {
        "/job/{job_id}/status": {"parameters": [_JOB_ID], "get": _op(
            "State, partitions with committed offset and lag, counters, last error",
            {"200": _json(anything, "status"), **_errors(401, 404)})},
        "/job/{job_id}/dead_letters": {
            "parameters": [_JOB_ID],
            "get": _op("Dead letters (from the job's dead-letter topic), newest first, paged",
                       {"200": _json(anything, "a page"), **_errors(400, 401, 404)},
                       parameters=_PAGE_PARAMS),
            "delete": _op("Purge the dead letters (remembered in the topic; Kafka's retention "
                          "removes the records)",
                          {"200": _json(anything, "purged"), **_errors(401, 403, 404)}),
        },
        "/job/{job_id}/dead_letters/replay": {"parameters": [_JOB_ID], "post": _op(
            "Send dead letters again (all, or the ids given)",
            {"200": _json(anything, "replayed"), **_errors(400, 401, 403, 404, 415)},
            requestBody=_REPLAY_BODY)},
        "/job/{job_id}/preview": {"parameters": [_JOB_ID], "post": _op(
            "The request(s) the job would send for a sample message; nothing is sent",
            {"200": _json(anything, "requests"), **_errors(400, 401, 403, 404, 415)},
            requestBody=_PREVIEW_BODY)},
        "/job/{job_id}/set_offset/{offset}": {"parameters": [_JOB_ID, _OFFSET], "post": _op(
            "Move every partition of the job to an offset, earliest or latest",
            {"200": _json(anything, "moved the group's offsets"),
             "202": _json(anything, "stored with a generation for the running readers; "
                          "status shows it pending until applied"),
             "409": _json(_ERROR, "Kafka refused"), **_errors(400, 401, 403, 404)})},
    }


def _service_paths() -> dict[str, Any]:
    anything = {"type": "object"}
    public: dict[str, Any] = {"security": []}
    return {
        "/healthz": {"get": _op("Liveness", {"200": _json(anything, "alive")}, **public)},
        "/readyz": {"get": _op("Readiness: Redis and Kafka reachable",
                               {"200": _json(anything, "ready"),
                                "503": _json(anything, "not ready")}, **public)},
        "/job_schema": {"get": _op("The job JSON Schema",
                                   {"200": _json(anything, "JSON Schema"), **_errors(401)})},
        "/metrics": {"get": _op("Prometheus metrics of every job", {
            "200": {"description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)})},
        "/openapi.json": {"get": _op("This document",
                                     {"200": _json(anything, "OpenAPI"), **_errors(401)})},
    }


def _console_paths() -> dict[str, Any]:
    page = {"200": {"description": "an HTML page of the operator console",
                    "content": {"text/html": {"schema": {"type": "string"}}}}}
    jobs_page = {"get": _op("The console: every job at a glance", {**page, **_errors(401)})}
    rows = {"type": "object", "properties": {
        "jobs": {"type": "array", "items": {"type": "object"}},
        "owners": {"type": "array", "items": {"type": "string"}}, "time": {"type": "number"}}}
    return {
        "/ui": jobs_page, "/ui/": jobs_page,
        "/ui/job/{job_id}": {"parameters": [_JOB_ID], "get": _op(
            "The console's page of one job", {**page, **_errors(401, 404)})},
        "/ui/api/jobs": {"get": _op(
            "The console's jobs table: each job's state, lag, deliveries per second over the "
            "last minutes, dead letters and last error, read in one Redis round trip",
            {"200": _json(rows, "rows"), **_errors(401)},
            parameters=[{"name": "owner", "in": "query", "schema": {"type": "string"}}])},
    }


def _admin_paths() -> dict[str, Any]:
    anything = {"type": "object"}
    name = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"}}
    user_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": {
            "role": {"enum": ["admin", "editor", "viewer"]},
            "owners": {"type": "array", "items": {"type": "string"}},
            "password": {"type": "string", "minLength": 12}}}}}}
    user = {"$ref": "#/components/schemas/User"}
    return {
        "/users": {"get": _op("Every user (never a password or token hash)", {
            "200": _json({"type": "array", "items": user}, "users"), **_errors(401, 403)})},
        "/user/{name}": {
            "parameters": [name],
            "post": _op("Create or change a user (a change without password keeps it)",
                        {"200": _json(user, "changed"), "201": _json(user, "created"),
                         **_errors(400, 401, 403, 415)}, requestBody=user_body),
            "delete": _op("Delete a user: its password and tokens stop working at once",
                          {"200": _json(anything, "deleted"), **_errors(401, 403, 404)}),
        },
        "/user/{name}/token": {"parameters": [name], "post": _op(
            "A new bearer token for the user, shown this once (only its hash is kept)",
            {"200": _json(anything, "the token"), **_errors(401, 403, 404)})},
        "/audit": {"get": _op(
            "The audit trail, newest first: who changed what, when, from where",
            {"200": _json({"type": "array", "items": anything}, "records"),
             **_errors(400, 401, 403)},
            parameters=[{"name": n, "in": "query", "schema": {"type": "string"}}
                        for n in ("job", "user")] + [
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}])},
    }


def _with_roles(paths: dict[str, Any], url_map: Map | None) -> dict[str, Any]:
    """Each operation's roles (``x-roles``, and said in its description), from ``policy``."""
    if url_map is None:
        return paths
    for rule in url_map.iter_rules():
        path = rule.rule.replace("<", "{").replace(">", "}")
        found = policy.rule_for(rule.endpoint)
        for method in rule.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None and found is not None:
                roles = policy.ROLES_ALLOWED[found.action]
                operation["x-roles"] = roles
                scope = " (their owners' jobs only)" if found.scope != "none" else ""
                operation["description"] = f"Who may: {roles}{scope}."
    return paths


def openapi_document(url_map: Map | None = None) -> dict[str, Any]:
    """The whole OpenAPI document; with the app's ``url_map``, each operation's roles."""
    job_schema = {k: v for k, v in jobs.SCHEMA.items() if k not in ("$schema", "$id")}
    job_view = {**job_schema, "properties": {
        **job_schema["properties"],
        "state": {"enum": ["running", "stopped", "error", "pending"]},
        "reason": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "rest-consumer", "version": __version__,
                 "description": "Deliver Aether records from Apache Kafka to REST endpoints."},
        "security": [{"basic": []}, {"bearer": []}],
        "paths": _with_roles({**_service_paths(), **_job_paths(), **_operation_paths(),
                              **_console_paths(), **_admin_paths()}, url_map),
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Job": job_schema,
                "JobView": job_view,
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "details": {}}},
                "User": {"type": "object", "properties": {
                    "name": {"type": "string"}, "role": {"enum": ["admin", "editor", "viewer"]},
                    "owners": {"type": "array", "items": {"type": "string"}},
                    "has_password": {"type": "boolean"}, "tokens": {"type": "integer"},
                    "modified": {"type": "string"}, "modified_by": {"type": "string"}}},
            },
        },
    }
