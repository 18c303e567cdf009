"""What the API reports of a running job: its state from the readers' heartbeats."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rest_consumer.core.jobs import Job, setting
from rest_consumer.state.heartbeat import Heartbeat, fresh_heartbeats


def reader_reports(client: Any, job_id: str) -> list[dict[str, Any]]:
    """The fresh heartbeats of the readers running this job."""
    return [asdict(b) for b in fresh_heartbeats(client, job_id)]


def job_state(client: Any, job: Job) -> dict[str, Any]:
    """``{"state": running|stopped|error|pending, "reason": …}`` for one job."""
    if not setting(job, "enabled"):
        return _stopped(job)
    return state_of(job, fresh_heartbeats(client, job["id"]))


def _stopped(job: Job) -> dict[str, Any]:
    """A stopped job's state; with the reason when it was restored invalid (``JobStore``)."""
    return {"state": "stopped", **({"reason": job["reason"]} if job.get("reason") else {})}


def state_of(job: Job, beats: list[Heartbeat]) -> dict[str, Any]:
    """``job_state`` from heartbeats already read (and known fresh)."""
    if not setting(job, "enabled"):
        return _stopped(job)
    errors = [b.error for b in beats if b.error]
    if errors:
        return {"state": "error", "reason": errors[0]}
    if any(b.hash == job["hash"] for b in beats):
        return {"state": "running"}
    return {"state": "pending", "reason": "no reader runs this version of the job yet"}
