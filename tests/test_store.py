"""JobStore on Redis: indexes, atomic changes, control messages."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from conftest import valid_job
from rest_consumer.core.errors import JobNotFound, JobValidationError
from rest_consumer.state import keys
from rest_consumer.state.store import JobStore


def test_upsert_creates_then_updates(any_redis: Any) -> None:
    store = JobStore(any_redis)
    job, created = store.upsert("people", valid_job())
    assert created and store.get("people") == job
    job2, created2 = store.upsert("people", valid_job(url="http://api.example.net:9/{id}"))
    assert not created2 and job2["hash"] != job["hash"]


def test_indexes_follow_owner_changes_and_deletion(any_redis: Any) -> None:
    store = JobStore(any_redis)
    store.upsert("people", valid_job())
    store.upsert("other", valid_job(id="other"))
    assert [j["id"] for j in store.list("alice")] == ["other", "people"]
    store.upsert("people", valid_job(owner="bob"))
    assert [j["id"] for j in store.list("alice")] == ["other"]
    assert [j["id"] for j in store.list("bob")] == ["people"]
    store.delete("people")
    assert [j["id"] for j in store.list()] == ["other"] and store.list("bob") == []
    assert not any_redis.exists(keys.owner_jobs("bob"))


def test_an_invalid_job_changes_nothing(any_redis: Any) -> None:
    store = JobStore(any_redis)
    with pytest.raises(JobValidationError):
        store.upsert("people", valid_job(type="NOPE"))
    assert store.list() == [] and store.find("people") is None


def test_unknown_jobs_raise_not_found(any_redis: Any) -> None:
    store = JobStore(any_redis)
    for call in (lambda: store.get("x"), lambda: store.delete("x"),
                 lambda: store.set_enabled("x", False)):
        with pytest.raises(JobNotFound):
            call()


def test_create_if_absent_never_overrides(any_redis: Any) -> None:
    store = JobStore(any_redis)
    store.upsert("people", valid_job(owner="api"))
    assert store.create_if_absent("people", valid_job(owner="file")) is None
    assert store.get("people")["owner"] == "api"


def test_every_change_publishes_its_control_message(any_redis: Any) -> None:
    store = JobStore(any_redis)
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(keys.CONTROL_PATTERN)
    job, _ = store.upsert("people", valid_job())
    stopped = store.set_enabled("people", False)
    started = store.set_enabled("people", True)
    store.delete("people")
    received = []
    deadline = time.monotonic() + 5
    while len(received) < 4 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)  # None for the subscription confirmation
        if message is not None:
            received.append((message["channel"], json.loads(message["data"])))
    assert [c for c, _ in received] == [b"msg/job:people"] * 4
    assert [(m["action"], m["hash"]) for _, m in received] == [
        ("upsert", job["hash"]), ("stop", stopped["hash"]), ("start", started["hash"]),
        ("delete", started["hash"])]
    pubsub.close()


def test_restore_puts_back_a_lost_job_only(any_redis: Any) -> None:
    store = JobStore(any_redis)
    job, _ = store.upsert("people", valid_job())
    any_redis.flushdb()
    assert store.restore(job) and store.get("people") == job
    assert not store.restore({**job, "owner": "mallory"})
    assert store.get("people")["owner"] == "alice"
