"""What the API reports of a running job: its state from the readers' heartbeats."""

from __future__ import annotations

import json
import time
from typing import Any

from rest_consumer import keys
from rest_consumer.jobs import Job

HEARTBEAT_TTL = 30.0
"""A reader that has not refreshed its heartbeat for this long is taken for dead."""


def reader_reports(client: Any, job_id: str) -> list[dict[str, Any]]:
    """The fresh heartbeats of the readers running this job."""
    now = time.time()
    reports = []
    for raw in client.hvals(keys.reader_heartbeat(job_id)):
        report = json.loads(raw)
        if now - float(report.get("ts", 0)) <= HEARTBEAT_TTL:
            reports.append(report)
    return reports


def job_state(client: Any, job: Job) -> dict[str, Any]:
    """``{"state": running|stopped|error|pending, "reason": …}`` for one job."""
    if not job.get("enabled", True):
        return {"state": "stopped"}
    reports = reader_reports(client, job["id"])
    errors = [r["error"] for r in reports if r.get("error")]
    if errors:
        return {"state": "error", "reason": errors[0]}
    if any(r.get("hash") == job["hash"] for r in reports):
        return {"state": "running"}
    return {"state": "pending", "reason": "no reader runs this version of the job yet"}
