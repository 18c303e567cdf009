"""The Flask API: manage jobs; every change is stored and announced on ``msg/job:<id>``."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka import KafkaException
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from rest_consumer.core import config, job_secrets, jobs
from rest_consumer.core.config import Settings
from rest_consumer.core.errors import (
    ConfigError,
    JobNotFound,
    JobValidationError,
    UserNotFound,
    ValidationError,
)
from rest_consumer.core.messages import Dispatcher, TaskMessage
from rest_consumer.state.audit import AuditLog
from rest_consumer.state.jobfiles import load_job_files
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import TopicError
from rest_consumer.state.users import UserStore
from rest_consumer.web import metrics
from rest_consumer.web.auditing import record_change
from rest_consumer.web.authn import Authenticator
from rest_consumer.web.console import console
from rest_consumer.web.openapi import openapi_document
from rest_consumer.web.operations import dead_letter_queue, json_body, operations
from rest_consumer.web.policy import authorize, principal, visible
from rest_consumer.web.status import job_state
from rest_consumer.web.users import users

log = logging.getLogger(__name__)

READY_CACHE_SECONDS = 2.0

routes = Blueprint("routes", __name__)


def create_app(settings: Settings | None = None, *, store: JobStore | None = None,
               kafka_ready: Any = None, dispatch: Any = None, load_files: bool = True,
               user_store: UserStore | None = None) -> Flask:
    """The application factory; refuses to build an API nobody could authenticate to.

    A store without Kafka (``JobStore`` without a log: unit tests) gets users kept in Redis
    only and an audit trail kept in memory; otherwise both live in their topics."""
    settings = settings or config.from_env()
    if (problem := settings.credential_problem()) is not None:
        raise ConfigError(problem)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = store or JobStore.for_settings(
        settings.redis_client(socket_timeout=5), settings)
    kafka = settings.kafka_client_config() if store.log is not None else None
    user_store = user_store or (UserStore.for_settings(store.redis, settings) if kafka
                                else UserStore(store.redis, reserved=settings.api_user))
    app.extensions["rest_consumer"] = {
        "settings": settings, "store": store, "users": user_store,
        "authenticator": Authenticator(settings, user_store),
        "audit": AuditLog(kafka, settings.consumer_group_prefix),
        "kafka_ready": _at_most_every(READY_CACHE_SECONDS,
                                      kafka_ready or _kafka_ready_check(settings)),
        "dispatch": dispatch or _celery_dispatch(settings),
    }
    app.before_request(authorize)
    app.before_request(_ensure_jobs_loaded)
    app.after_request(record_change)
    app.register_error_handler(Exception, _error_response)
    app.register_blueprint(routes)
    app.register_blueprint(operations)
    app.register_blueprint(console)
    app.register_blueprint(users)
    if load_files:
        _load_files(store, settings)
    return app


def _load_files(store: JobStore, settings: Settings) -> None:
    """Jobs from files are added only where none is stored: so Kafka's jobs come back first."""
    try:
        store.ensure_loaded()
    except (TopicError, KafkaException, redis.RedisError) as e:
        log.warning("job files not loaded: %s (the reader loads them when it starts)", e)
        return
    load_job_files(store, settings.jobs_dir)


def _celery_dispatch(settings: Settings) -> Any:
    """Replays go through Celery like the reader's tasks, on a broker connection made lazily."""
    made: list[Dispatcher] = []

    def dispatch(job: jobs.Job, groups: list[list[TaskMessage]]) -> list[str]:
        if not made:
            from rest_consumer.broker.celery_app import create_celery, make_dispatcher

            made.append(make_dispatcher(create_celery(settings)))
        return made[0](job, groups)

    return dispatch


def _ext(name: str) -> Any:
    return current_app.extensions["rest_consumer"][name]


def _store() -> JobStore:
    store: JobStore = _ext("store")
    return store


# --- errors: one table, one handler ---------------------------------------------------------

ERROR_STATUS: list[tuple[type[BaseException], int, str]] = [
    (JobValidationError, 400, "invalid job"),
    (ValidationError, 400, "invalid request"),
    (JobNotFound, 404, "job not found"),
    (UserNotFound, 404, "user not found"),
    (redis.RedisError, 503, "Redis is unavailable"),
    (OperationalError, 503, "the Celery broker is unavailable"),
    (TopicError, 503, "Kafka is unavailable"),
    (KafkaException, 503, "Kafka is unavailable"),
]


def _error_response(error: Exception) -> Any:
    if isinstance(error, HTTPException):
        response = error.get_response()
        response.data = jsonify(error=error.name.lower(), details=error.description).data
        response.content_type = "application/json"
        return response
    for kind, status, title in ERROR_STATUS:
        if isinstance(error, kind):
            details: Any = getattr(error, "problems", None) or str(error)
            if status >= 500:
                log.error("%s %s: %s", request.method, request.path, error)
            return jsonify(error=title, details=details), status
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify(error="internal error", details="see the API's log"), 500


def _ensure_jobs_loaded() -> None:
    """After Redis lost its data, the first request rebuilds the jobs from Kafka."""
    if "principal" in g and (restored := _store().ensure_loaded()):
        log.warning("Redis had lost the jobs: %d restored from the jobs topic", restored)


# --- routes --------------------------------------------------------------------------------

def _shown(job: jobs.Job) -> dict[str, Any]:
    """A job as the API shows it: secrets redacted, with its state."""
    return {**job_secrets.redact(job), **job_state(_store().redis, job)}




@routes.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@routes.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready or not for anyone; which check failed, and why, only with admin credentials
    (the reasons name internal hosts and ports)."""
    checks = {"redis": _check(lambda: _store().redis.ping()), "kafka": _check(_ext("kafka_ready"))}
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
    caller = _ext("authenticator").quietly(request.headers.get("Authorization", ""))
    if caller is not None and caller.role == "admin":
        body["checks"] = checks
    for name, outcome in checks.items():
        if outcome != "ok":
            log.warning("readiness: %s %s", name, outcome)
    return jsonify(body), 200 if ready else 503


def _check(probe: Any) -> str:
    try:
        probe()
    except Exception as e:  # noqa: BLE001 - any failure means "not ready", and says why
        return f"unavailable: {e}"
    return "ok"


def _at_most_every(seconds: float, probe: Callable[[], Any]) -> Callable[[], None]:
    """``probe``, run at most once per ``seconds`` whoever asks: ``/readyz`` needs no
    credentials, so a flood of it must not become a flood of Kafka metadata requests."""
    lock = threading.Lock()
    last: dict[str, Any] = {"at": -math.inf, "error": None}

    def cached() -> None:
        with lock:
            if time.monotonic() - last["at"] >= seconds:
                try:
                    probe()
                    last["error"] = None
                except Exception as e:  # noqa: BLE001 - remembered and raised to every caller
                    last["error"] = e
                last["at"] = time.monotonic()
            if last["error"] is not None:
                raise last["error"]

    return cached


def _kafka_ready_check(settings: Settings) -> Any:
    """A probe that reuses one admin client, made at the first probe, for every later one."""
    admins: list[Any] = []

    def probe() -> None:
        if not admins:
            from confluent_kafka.admin import AdminClient

            admins.append(AdminClient({**settings.kafka_client_config(), "log_level": 0}))
        if not admins[0].list_topics(timeout=3).brokers:
            raise ConnectionError("no broker answered")

    return probe


@routes.get("/jobs")
def list_jobs() -> Response:
    return jsonify([_shown(job) for job in visible(_store().list())])


@routes.get("/jobs/<owner>")
def list_owner_jobs(owner: str) -> Response:
    return jsonify([_shown(job) for job in visible(_store().list(owner))])


@routes.get("/job/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(_shown(_store().get(job_id)))


@routes.post("/job/<job_id>")
def upsert_job(job_id: str) -> tuple[Response, int]:
    job, created = _store().upsert(job_id, json_body(), by=principal().name)
    log.info("job %s %s by %s", job_id, "created" if created else "updated", principal().name)
    return jsonify(_shown(job)), 201 if created else 200


@routes.delete("/job/<job_id>")
def delete_job(job_id: str) -> Response:
    _store().delete(job_id)
    log.info("job %s deleted by %s", job_id, principal().name)
    try:
        dead_letter_queue(job_id).forget()
    except (TopicError, KafkaException) as e:
        log.warning("job %s: could not mark its dead letters done (%s); a new job with this "
                    "id would show them", job_id, e)
    return jsonify(id=job_id, deleted=True)


@routes.post("/job/<job_id>/start")
def start_job(job_id: str) -> Response:
    return jsonify(_shown(_store().set_enabled(job_id, True, by=principal().name)))


@routes.post("/job/<job_id>/stop")
def stop_job(job_id: str) -> Response:
    return jsonify(_shown(_store().set_enabled(job_id, False, by=principal().name)))


@routes.get("/job_schema")
def job_schema() -> Response:
    return jsonify(jobs.SCHEMA)


@routes.get("/metrics")
def prometheus_metrics() -> Response:
    return Response(metrics.render(_store(), visible), mimetype="text/plain; version=0.0.4")


@routes.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(current_app.url_map))
