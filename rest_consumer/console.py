"""The operator console at ``/ui``: two pages (jobs, one job) and the one route the jobs table
needs; everything else the pages do goes through the API's own routes. Served by the API with
its credentials; no build step, no CDN: the assets are files of this package."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException
from flask import Blueprint, Response, current_app, jsonify, render_template, request

from rest_consumer import csrf
from rest_consumer.operations import dead_letter_queue
from rest_consumer.overview import snapshots
from rest_consumer.store import JobStore
from rest_consumer.topics import TopicError

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2
INDEXES_PER_REFRESH = 5
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Scripts and styles only from the package's files (no inline script can run, whatever a
job's data holds), and no page may frame the console (clickjacking)."""

console = Blueprint("console", __name__, url_prefix="/ui", static_folder="web/static",
                    static_url_path="/static", template_folder="web/templates")


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
    settings = current_app.extensions["rest_consumer"]["settings"]
    return render_template(template, csrf_token=csrf.token(settings),
                           refresh_ms=REFRESH_SECONDS * 1000, **context)


@console.get("")
@console.get("/")
def jobs_page() -> str:
    return _page("jobs.html")


@console.get("/job/<job_id>")
def job_page(job_id: str) -> str:
    _store().get(job_id)  # 404 for a job that does not exist
    return _page("job.html", job_id=job_id)


@console.get("/api/jobs")
def job_rows() -> Response:
    """Every job's row (or one owner's), read in one Redis round trip."""
    owner = request.args.get("owner") or None
    every = _store().list()
    chosen = [job for job in every if owner is None or job.get("owner") == owner]
    rows = [snapshot.row() for snapshot in snapshots(_store().redis, chosen)]
    _index_dead_letters([row for row in rows if row["dead_letters"] is None])
    return jsonify(jobs=rows, owners=sorted({str(job.get("owner")) for job in every}),
                   time=time.time())


def _index_dead_letters(rows: list[dict[str, Any]]) -> None:
    """Rebuild a few jobs' dead-letter indexes from Kafka (new jobs, or after Redis lost
    them), so each refresh stays quick and the table fills in within a few; the rest show
    as unknown meanwhile, never as zero."""
    for row in rows[:INDEXES_PER_REFRESH]:
        queue = dead_letter_queue(row["id"])
        try:
            row["dead_letters"] = queue.count()
        except (TopicError, KafkaException) as e:
            log.warning("job %s: dead letters not indexed: %s", row["id"], e)
            return
