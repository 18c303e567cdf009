"""The operator console at ``/ui``: two pages (jobs, one job) and the one route the jobs table
needs; everything else the pages do goes through the API's own routes. Served by the API with
its credentials; no build step, no CDN: the assets are files of this package."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from confluent_kafka import KafkaException
from flask import Blueprint, Response, current_app, jsonify, render_template, request

from rest_consumer.state.deadletterqueue import DeadLetterQueue
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import TopicError
from rest_consumer.web import csrf
from rest_consumer.web.operations import dead_letter_queue
from rest_consumer.web.overview import snapshots
from rest_consumer.web.policy import principal, visible

log = logging.getLogger(__name__)

_indexer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dead-letter-index")
_indexing: set[str] = set()
"""Jobs whose index is being rebuilt or waits to be."""
_indexing_lock = threading.Lock()

REFRESH_SECONDS = 2
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Scripts and styles only from the package's files (no inline script can run, whatever a
job's data holds), and no page may frame the console (clickjacking)."""

console = Blueprint("console", __name__, url_prefix="/ui", static_folder="static",
                    static_url_path="/static", template_folder="templates")


def _store() -> JobStore:
    store: JobStore = current_app.extensions["rest_consumer"]["store"]
    return store


@console.after_request
def _protect(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype != "text/css" and response.mimetype != "text/javascript":
        response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, **context: Any) -> str:
    """A page for the caller: its CSRF token, and only the controls its role may use."""
    caller = principal()
    return render_template(template, csrf_token=csrf.token(caller),
                           refresh_ms=REFRESH_SECONDS * 1000, user=caller.name,
                           role=caller.role, can_change=caller.may("change"),
                           is_admin=caller.may("admin"), **context)


@console.get("")
@console.get("/")
def jobs_page() -> str:
    """The table's first rows come inside the page: drawn without waiting for a second
    request; refreshes then ask ``/ui/api/jobs``."""
    return _page("jobs.html", first=_rows(request.args.get("owner") or None))


@console.get("/job/<job_id>")
def job_page(job_id: str) -> str:
    _store().get(job_id)  # 404 for a job that does not exist
    return _page("job.html", job_id=job_id)


@console.get("/api/jobs")
def job_rows() -> Response:
    return jsonify(_rows(request.args.get("owner") or None))


def _rows(owner: str | None) -> dict[str, Any]:
    """Every job's row (or one owner's), read in one Redis round trip, and every owner."""
    every = visible(_store().list())
    chosen = [job for job in every if owner is None or job.get("owner") == owner]
    rows = [snapshot.row() for snapshot in snapshots(_store().redis, chosen)]
    _index_dead_letters([row for row in rows if row["dead_letters"] is None])
    return {"jobs": rows, "owners": sorted({str(job.get("owner")) for job in every}),
            "time": time.time()}


def _index_dead_letters(rows: list[dict[str, Any]]) -> None:
    """Rebuild, in the background, the dead-letter indexes these rows lack (new jobs, or
    after Redis lost them): reading Kafka may take seconds (or time out when it is down), and
    a refresh never waits for it; the rows show unknown, never zero, until the next one."""
    for row in rows:
        job_id = row["id"]
        with _indexing_lock:
            if job_id in _indexing:
                continue
            _indexing.add(job_id)
        _indexer.submit(_index, job_id, dead_letter_queue(job_id))


def _index(job_id: str, queue: DeadLetterQueue) -> None:
    try:
        queue.ensure_index()
    except (TopicError, KafkaException, redis.RedisError) as e:
        log.warning("job %s: dead letters not indexed: %s", job_id, e)
    finally:
        with _indexing_lock:
            _indexing.discard(job_id)
