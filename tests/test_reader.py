"""The reader's parts with a fake consumer and fakeredis: what it sends, commits and seeks.

The thread around them (``JobReader``) is exercised end to end in ``test_pipeline.py``.
"""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
from confluent_kafka import TopicPartition

from rest_consumer.core.messages import TaskMessage
from rest_consumer.reader.backpressure import Backpressure
from rest_consumer.reader.batching import AdaptiveBatcher, task_size
from rest_consumer.reader.committing import Committer
from rest_consumer.reader.outbox import DispatchFailed, Outbox
from rest_consumer.reader.seeking import Positions
from rest_consumer.reader.tracking import Partitions, PartitionTracker
from rest_consumer.reader.vanished import VanishedTasks
from rest_consumer.state import keys, outstanding, seeks
from rest_consumer.state.retries import Retry, schedule

JOB = {"id": "people", "hash": "h1", "topic": ["t"]}


class FakeMessage:
    """What the reader reads of a confluent-kafka ``Message``."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000)

    def headers(self) -> list[Any]:
        return []


class FakeConsumer:
    """Records seeks and commits; partitions hold offsets 0..99."""

    def __init__(self, assigned: list[tuple[str, int]] = ()) -> None:  # type: ignore[assignment]
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[tuple[str, int, int]] = []
        self.assigned = [TopicPartition(t, p) for t, p in assigned]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits += [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def assignment(self) -> list[TopicPartition]:
        return self.assigned

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, 100


def messages(topic: str, partition: int, offsets: range) -> list[Any]:
    return [FakeMessage(topic, partition, o) for o in offsets]


def mark_final(client: Any, topic: str, partition: int, offsets: list[int]) -> None:
    client.zadd(keys.done("people", topic, partition), {str(o): o for o in offsets})


@pytest.fixture
def client() -> Any:
    return fakeredis.FakeRedis()


def recording(sent: list[list[list[TaskMessage]]]) -> Any:
    """A dispatcher that keeps what it is given and names each task ``task<n>``."""
    def dispatch(job: Any, groups: list[list[TaskMessage]]) -> list[str]:
        sent.append(groups)
        return [f"task{n}" for n in range(len(groups))]
    return dispatch


def test_the_outbox_sends_tasks_of_batch_size_and_tracks_them_as_out(client: Any) -> None:
    sent: list[list[list[TaskMessage]]] = []
    partitions = Partitions()
    outbox = Outbox(JOB, client, recording(sent), partitions, None, 2, lambda error: None)
    outbox.send_consumed(messages("t", 0, range(5)))
    assert [[m.offset for m in task] for task in sent[0]] == [[0, 1], [2, 3], [4]]
    assert list(partitions[("t", 0)].pending) == [0, 1, 2, 3, 4]
    assert partitions[("t", 0)].task_of == {0: "task0", 1: "task0", 2: "task1", 3: "task1",
                                            4: "task2"}
    assert int(client.hget(keys.counters("people"), "dispatched")) == 5
    assert client.zcard(keys.out("people", "t", 0)) == 5


def test_the_outbox_does_not_send_again_what_is_known_final(client: Any) -> None:
    sent: list[list[list[TaskMessage]]] = []
    partitions = Partitions()
    partitions[("t", 0)] = PartitionTracker()
    partitions[("t", 0)].known_final = {1}
    outbox = Outbox(JOB, client, recording(sent), partitions, None, 100, lambda e: None)
    outbox.send_consumed(messages("t", 0, range(3)))
    assert [m.offset for task in sent[0] for m in task] == [0, 2]
    assert partitions[("t", 0)].watermark == 0  # 1 is final, 0 and 2 are out


def test_a_refused_dispatch_names_what_must_be_read_again(client: Any) -> None:
    def refuse(job: Any, groups: Any) -> None:
        raise ConnectionError("broker down")

    partitions = Partitions()
    outbox = Outbox(JOB, client, refuse, partitions, None, 100, lambda e: None)
    with pytest.raises(DispatchFailed) as failed:
        outbox.send_consumed(messages("t", 0, range(3)))
    assert [m.offset() for m in failed.value.undelivered] == [0, 1, 2]
    assert ("t", 0) not in partitions  # nothing tracked: nothing will be committed past it


def test_undo_seeks_each_partition_back_to_its_first_undelivered_message(client: Any) -> None:
    consumer = FakeConsumer()
    positions = Positions("people", client, Partitions(), AdaptiveBatcher(lambda: 0, 100), None)
    positions.undo(consumer, messages("t", 0, range(3, 6)) + messages("t", 1, range(7, 9)))
    assert consumer.seeks == [("t", 0, 3), ("t", 1, 7)]


def test_the_committer_commits_the_watermark_below_the_first_offset_not_final(
        client: Any) -> None:
    partitions = Partitions()
    partitions.track(messages("t", 0, range(5)))
    consumer = FakeConsumer()
    committer = Committer("people", client, partitions, None)
    mark_final(client, "t", 0, [0, 1, 3])
    assert committer.collect_and_commit(consumer, [("t", 0)]) == []
    assert consumer.commits == [("t", 0, 2)]
    mark_final(client, "t", 0, [2, 4])
    committer.collect_and_commit(consumer, [("t", 0)])
    assert consumer.commits[-1] == ("t", 0, 5)
    # What the commit covers is forgotten in Redis
    assert client.zcard(keys.done("people", "t", 0)) == 0
    assert committer.report(consumer)["t[0]"] == {
        "topic": "t", "partition": 0, "committed": 5, "high": 100, "lag": 95}


def test_between_commits_the_reader_learns_only_what_became_final_since_it_last_looked(
        client: Any) -> None:
    partitions = Partitions()
    partitions.track(messages("t", 0, range(5)))
    committer = Committer("people", client, partitions, None)
    pipe = client.pipeline()
    outstanding.queue_final(pipe, "people", ("t", 0), [0, 1, 3])
    pipe.execute()
    committer.collect_fresh([("t", 0)])
    assert partitions[("t", 0)].watermark == 2 and partitions[("t", 0)].done == {3}
    assert not client.exists(keys.fresh("people", "t", 0))  # popped: the next look is cheap
    pipe = client.pipeline()
    outstanding.queue_final(pipe, "people", ("t", 0), [2])
    pipe.execute()
    committer.collect_fresh([("t", 0)])
    assert partitions[("t", 0)].watermark == 4
    # done stays the truth: the commit reads it, whatever was popped
    consumer = FakeConsumer()
    committer.collect_and_commit(consumer, [("t", 0)])
    assert consumer.commits == [("t", 0, 4)]


def stalled_with(task: str, seconds: float = 100.0) -> Partitions:
    """One partition whose oldest pending offset (5), sent in ``task``, has not moved for
    ``seconds``."""
    partitions = Partitions()
    partitions.track(messages("t", 0, range(5, 8)))
    partitions.carried({task: messages("t", 0, range(5, 8))})
    partitions[("t", 0)].last_progress -= seconds
    return partitions


def test_a_task_found_nowhere_has_its_partition_read_again(client: Any) -> None:
    vanished = VanishedTasks("people", "q", visibility_timeout=45)
    assert vanished.find(client, stalled_with("gone", seconds=30)) == []  # not stalled long
    assert vanished.find(client, stalled_with("gone")) == [("t", 0)]
    client.lpush("q", b"some task")  # it may be waiting there
    assert vanished.find(client, stalled_with("gone")) == []
    client.delete("q")
    client.hset(keys.KOMBU_UNACKED, "tag", b'[{"headers": {"id": "gone"}}, "", ""]')
    client.zadd(keys.KOMBU_UNACKED_INDEX, {"tag": time.time() - 30})
    assert vanished.find(client, stalled_with("gone")) == []  # reserved: restored in time
    # a record kombu should have restored long ago (its restore lock held by a dead worker)
    client.zadd(keys.KOMBU_UNACKED_INDEX, {"tag": time.time() - 130})
    assert vanished.find(client, stalled_with("gone")) == [("t", 0)]
    assert not client.exists(keys.KOMBU_UNACKED) and not client.exists(keys.KOMBU_UNACKED_INDEX)
    other = Retry("other[*]", "h", None, TaskMessage("t", 0, 1, None, b"{}", 1000))
    schedule(client, other, 300)
    assert vanished.find(client, stalled_with("gone")) == [("t", 0)]  # another job's retry
    schedule(client, Retry("people", "h", None, TaskMessage("t", 0, 5, None, b"{}", 1000)), 300)
    assert vanished.find(client, stalled_with("gone")) == []  # a retry of it may wait there
    client.delete(keys.RETRIES)
    # a task once seen claimed is never suspected again (its retry may wait longer than
    # its claim's done mark lives)
    client.set(keys.task_claim("ran"), "done")
    partitions = stalled_with("ran")
    assert vanished.find(client, partitions) == []
    client.delete(keys.task_claim("ran"))
    assert vanished.find(client, partitions) == []
    # what the partition's next owner adopted carries no task id: never suspected here
    partitions[("t", 0)].task_of.clear()
    assert vanished.find(client, partitions) == []


def test_a_rewind_reads_again_from_the_watermark_and_keeps_what_was_final(
        client: Any) -> None:
    partitions = Partitions()
    partitions.track(messages("t", 0, range(10, 14)))
    partitions[("t", 0)].finished([11])
    consumer = FakeConsumer()
    Positions("people", client, partitions, AdaptiveBatcher(lambda: 0, 100), None).rewind(
        consumer, [("t", 0)])
    assert consumer.seeks == [("t", 0, 10)]
    assert not partitions.needs_sending(FakeMessage("t", 0, 11))
    assert partitions.needs_sending(FakeMessage("t", 0, 12))


def test_set_offset_moves_the_partitions_it_waits_for_and_commits_at_once(
        client: Any) -> None:
    seeks.submit(client, "people", 42, ["t[0]"])
    partitions = Partitions()
    partitions.track(messages("t", 0, range(60, 63)))
    consumer = FakeConsumer(assigned=[("t", 0), ("t", 1)])
    Positions("people", client, partitions, AdaptiveBatcher(lambda: 0, 100), None) \
        .apply_seek_request(consumer)
    assert consumer.seeks == [("t", 0, 42)]
    assert consumer.commits == [("t", 0, 42)]
    assert partitions[("t", 0)].committed == 42 and not partitions[("t", 0)].pending
    request = seeks.current(client, "people")
    assert request is not None and seeks.pending(client, "people", request) == []


class PausingConsumer(FakeConsumer):
    """Records pauses, resumes and seeks in the order they are made."""

    def __init__(self, assigned: list[tuple[str, int]]) -> None:
        super().__init__(assigned)
        self.calls: list[str] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("pause")

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("resume")

    def seek(self, tp: TopicPartition) -> None:
        super().seek(tp)
        self.calls.append(f"seek {tp.partition}@{tp.offset}")


def test_backpressure_pauses_over_the_limit_and_resumes_below_half_then_seeks_back() -> None:
    partitions = Partitions()
    partitions[("t", 0)] = PartitionTracker()
    for offset in range(11):
        partitions[("t", 0)].dispatched(offset)
    consumer = PausingConsumer([("t", 0), ("t", 1)])  # t[1]: nothing dispatched yet
    pressure = Backpressure("people", 10, partitions)

    def send_held(held_by: Any) -> None:  # what the reader took goes out before either
        held_by.calls.append("send held")

    pressure.check(consumer, send_held)  # 11 > 10
    assert pressure.paused
    pressure.check(consumer, send_held)  # still 11: nothing more
    partitions[("t", 0)].finished(range(6))
    partitions[("t", 0)].advance()
    pressure.check(consumer, send_held)  # 5 is not below half
    assert pressure.paused
    partitions[("t", 0)].finished([6])
    partitions[("t", 0)].advance()
    pressure.check(consumer, send_held)  # 4 < 5: back to the first offset not dispatched
    assert not pressure.paused
    # Resumed first: a seek made while paused left librdkafka fetching nothing for ~1 s.
    assert consumer.calls == ["send held", "pause", "send held", "resume", "seek 0@11"]


def test_backpressure_counts_what_the_jobs_other_readers_have_in_flight() -> None:
    partitions = Partitions()
    partitions[("t", 0)] = PartitionTracker()
    partitions[("t", 0)].dispatched(0)
    consumer = PausingConsumer([("t", 0)])
    pressure = Backpressure("people", 10, partitions)
    pressure.others = 10
    pressure.check(consumer, lambda _: None)
    pressure.others = 3
    pressure.check(consumer, lambda _: None)
    assert consumer.calls == ["pause", "resume", "seek 0@1"]


def test_a_request_batch_job_packs_several_requests_worth_of_messages_into_a_task() -> None:
    assert task_size(JOB) == 100  # the schema's default
    assert task_size({**JOB, "batch_size": 7}) == 7
    assert task_size({**JOB, "request_batch": {}}) == 500  # 5 requests of 100 records
    assert task_size({**JOB, "request_batch": {"max_records": 20}}) == 100
    assert task_size({**JOB, "request_batch": {"max_records": 1000}}) == 1000  # the cap
    assert task_size({**JOB, "request_batch": {"max_records": 20}, "batch_size": 10}) == 10
    # An ordered job's batches go one after another in their task: one request a task.
    assert task_size({**JOB, "request_batch": {}, "ordering": "key"}) == 100
