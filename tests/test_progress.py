"""Outcomes recorded as they happen, and what a task copy counts as final (unit, fakeredis)."""

from __future__ import annotations

from functools import partial
from typing import Any

import fakeredis

from rest_consumer.core.config import Settings
from rest_consumer.core.destinations import Allowlist
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending
from rest_consumer.state import keys, outstanding
from rest_consumer.worker import execution
from rest_consumer.worker.progress import FLUSH_SECONDS, Progress


def final(client: Any, offsets: list[int]) -> set[int]:
    checked = [("people", 0, o) for o in offsets]
    pipe = client.pipeline()
    outstanding.queue_final_check(pipe, "job", checked)
    return {o for _, _, o in outstanding.final_among(checked, pipe.execute())}


def test_below_the_committed_offset_everything_is_final_until_a_reader_takes_over() -> None:
    client = fakeredis.FakeRedis()
    client.zadd(keys.done("job", "people", 0), {"12": 12})
    assert final(client, [5, 9, 10, 11, 12]) == {12}
    pipe = client.pipeline()
    outstanding.queue_committed(pipe, "job", ("people", 0), 10)
    pipe.execute()
    # a copy of a task whose original was committed since (its done marks trimmed) sends nothing
    assert final(client, [5, 9, 10, 11, 12]) == {5, 9, 12}
    outstanding.forget_committed(client, "job", [("people", 0)])
    assert final(client, [5, 9, 10, 11, 12]) == {12}


def job() -> CompiledJob:
    return CompiledJob({"id": "job", "owner": "t", "type": "POST", "topic": ["people"],
                        "datamap": {"id": "$.msg.id"}, "url": "http://h.example/{id}",
                        "json_body": ["id"], "hash": "h"},
                       Settings(destination_allowlist=Allowlist.parse(("*",))))


def test_a_running_task_records_wholly_delivered_messages_as_it_goes(monkeypatch: Any) -> None:
    client = fakeredis.FakeRedis()
    compiled = job()
    messages = [TaskMessage("people", 0, o) for o in (40, 41, 42)]
    # message 41 has two records; 42 was partly dead already (a mapping failure)
    prepared: dict[int, list[Outcome]] = {0: [], 1: [], 2: [Outcome.dead(1, "mapping")]}
    pending = [Pending(0, messages[0], 0, None, None),  # type: ignore[arg-type]
               Pending(1, messages[1], 0, None, None),  # type: ignore[arg-type]
               Pending(1, messages[1], 1, None, None),  # type: ignore[arg-type]
               Pending(2, messages[2], 0, None, None)]  # type: ignore[arg-type]
    progress = Progress(client, compiled, messages, prepared, pending,
                        partial(execution._each_record, None),
                        partial(execution._conclude, compiled))
    clock = [100.0]
    monkeypatch.setattr("rest_consumer.worker.progress.time.monotonic", lambda: clock[0])
    progress._next = clock[0]
    sent = [(pending[0], Outcome(0, "delivered", latency=0.01)),
            (pending[1], Outcome(0, "delivered", latency=0.01))]
    progress(sent)
    # 40 is final at once; 41 waits for its second record
    assert client.zrange(keys.done("job", "people", 0), 0, -1) == [b"40"]
    assert progress.recorded == {0}
    sent += [(pending[2], Outcome(1, "delivered")), (pending[3], Outcome(0, "delivered"))]
    progress(sent)  # too soon: nothing more is written
    assert progress.recorded == {0}
    clock[0] += FLUSH_SECONDS
    progress(sent)
    # 41 now; 42 never early (its dead letter is written at the task's end first)
    assert client.zrange(keys.done("job", "people", 0), 0, -1) == [b"40", b"41"]
    assert progress.recorded == {0, 1}
    assert int(client.hget(keys.counters("job"), "delivered") or 0) == 3
