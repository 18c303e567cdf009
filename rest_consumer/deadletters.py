"""A job's dead letters in its Redis stream: page, replay, purge."""

from __future__ import annotations

import json
from typing import Any

from rest_consumer import keys
from rest_consumer.messages import Dispatcher, TaskMessage
from rest_consumer.store import as_text


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    shown: dict[str, Any] = {"id": as_text(entry_id)}
    for name in ("reason", "excerpt", "topic"):
        shown[name] = data.get(name, "")
    for name in ("status", "partition", "offset", "index"):
        shown[name] = int(data[name]) if data.get(name, "") != "" else None
    shown["record_id"] = json.loads(data["record_id"]) if data.get("record_id") else None
    shown["request"] = json.loads(data["request"]) if data.get("request") else None
    shown["time"] = float(data.get("time") or 0)
    return shown


def page(client: Any, job_id: str, limit: int = 50, before: str | None = None) -> dict[str, Any]:
    """Newest first; ``next`` is the ``before`` of the following page (None at the end)."""
    stream = keys.dead_letters(job_id)
    start = f"({before}" if before else "+"
    raw = client.xrevrange(stream, max=start, min="-", count=limit)
    letters = [_entry(entry_id, fields) for entry_id, fields in raw]
    more = len(raw) == limit and bool(client.xrevrange(stream, max=f"({letters[-1]['id']}",
                                                        min="-", count=1))
    return {"dead_letters": letters, "total": client.xlen(stream),
            "next": letters[-1]["id"] if more else None}


def replay(client: Any, job: dict[str, Any], dispatch: Dispatcher,
           ids: list[str] | None = None) -> list[str]:
    """Send dead letters again as fresh deliveries (all, or the ids given); returns those sent."""
    stream = keys.dead_letters(job["id"])
    if ids is None:
        entries = client.xrange(stream, min="-", max="+")
    else:
        entries = [e for i in ids for e in client.xrange(stream, min=i, max=i)]
    sent = []
    for entry_id, fields in entries:
        index = fields.get(b"index", b"").decode()
        message = TaskMessage.from_args(json.loads(fields[b"message"]))
        dispatch(job, [[message.as_replay(int(index) if index else None)]])
        client.xdel(stream, entry_id)
        sent.append(as_text(entry_id))
    return sent


def purge(client: Any, job_id: str) -> int:
    """Delete every dead letter of the job; returns how many there were."""
    stream = keys.dead_letters(job_id)
    count = int(client.xlen(stream))
    client.delete(stream)
    return count
