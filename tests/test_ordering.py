"""Ordered delivery: the lines of keys and partitions (unit), and per key / per partition
order end to end with real Kafka, Redis, workers and an endpoint that fails some versions
first."""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from confluent_kafka import Message
from test_pipeline import committed, dead_letters, simple_job

from conftest import LOOPBACK, valid_job
from helpers import wait_for
from rest_consumer.core.jobs import validate
from rest_consumer.core.mapping import CompiledJob, RequestSpec
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending
from rest_consumer.devtools.producing import avro_container
from rest_consumer.reader.ordering import OrderGate
from rest_consumer.state import heartbeat
from rest_consumer.state.store import JobStore
from rest_consumer.worker.lanes import Lanes
from rest_consumer.worker.permits import Permits


def msg(offset: int, key: bytes | None = None, partition: int = 0) -> Message:
    return Message(topic="t", partition=partition, offset=offset, key=key)


def never_final(_: Message) -> bool:
    return False


def test_a_key_holds_its_later_messages_and_lets_other_keys_go() -> None:
    gate = OrderGate("key")
    ready = gate.admit([msg(0, b"a"), msg(1, b"b"), msg(2, b"a"), msg(3), msg(4, b"a")],
                       never_final)
    assert [m.offset() for m in ready] == [0, 1, 3]  # no key: not ordered
    assert gate.held == 2
    assert [m.offset() for m in gate.release("t", 0, [1])] == []  # b had nothing behind it
    assert [m.offset() for m in gate.release("t", 0, [0])] == [2]  # a's next, now holding
    assert gate.take_behind() == {("t", 0, 0): [2, 4]}  # what waited behind 0 when it ended
    assert [m.offset() for m in gate.release("t", 0, [2])] == [4]
    assert gate.held == 0 and gate.oldest_wait() is None


def test_partition_mode_sends_one_message_at_a_time_per_partition() -> None:
    gate = OrderGate("partition")
    ready = gate.admit([msg(0, b"a"), msg(1, b"b"), msg(0, b"x", partition=1)], never_final)
    assert [(m.partition(), m.offset()) for m in ready] == [(0, 0), (1, 0)]
    assert [m.offset() for m in gate.release("t", 0, [0])] == [1]


def test_dropping_a_partition_forgets_its_lines_and_waiting_messages() -> None:
    gate = OrderGate("key")
    gate.admit([msg(0, b"a"), msg(1, b"a"), msg(0, b"a", partition=1)], never_final)
    gate.drop({("t", 0)})
    assert gate.held == 0 and gate.partitions() == {("t", 1)}
    assert [m.offset() for m in gate.admit([msg(0, b"a")], never_final)] == [0]


def test_a_message_known_final_takes_no_line() -> None:
    gate = OrderGate("key")
    ready = gate.admit([msg(0, b"a"), msg(1, b"a")], lambda m: m.offset() == 0)
    assert [m.offset() for m in ready] == [0, 1]


def test_a_message_of_several_entities_goes_when_first_in_line_on_each() -> None:
    entities = {0: [b"a", b"b"], 1: [b"b"], 2: [b"c"], 3: [b"a", b"c"], 4: [b"d"]}
    gate = OrderGate("key", lambda m: entities[m.offset()])
    ready = gate.admit([msg(o) for o in range(5)], never_final)
    assert [m.offset() for m in ready] == [0, 2, 4]
    assert gate.held == 2
    assert [m.offset() for m in gate.release("t", 0, [0])] == [1]  # 3 still waits for c
    assert [m.offset() for m in gate.release("t", 0, [2])] == [3]
    assert gate.held == 0
    assert gate.release("t", 0, [1, 3, 4]) == []
    assert gate.partitions() == set()


def test_a_later_message_never_overtakes_an_earlier_one_waiting_on_another_entity() -> None:
    entities = {0: [b"a"], 1: [b"a", b"b"], 2: [b"b"]}
    gate = OrderGate("key", lambda m: entities[m.offset()])
    # b is free, but 1 (earlier, with b) waits for a: 2 must wait behind 1
    assert [m.offset() for m in gate.admit([msg(o) for o in range(3)], never_final)] == [0]
    assert [m.offset() for m in gate.release("t", 0, [0])] == [1]
    assert [m.offset() for m in gate.release("t", 0, [1])] == [2]
    gate.drop({("t", 0)})
    assert gate.held == 0


def test_ordering_key_reads_each_records_entity_and_needs_key_ordering() -> None:
    job = CompiledJob(valid_job(ordering="key", ordering_key="$.msg.household.id"))
    assert job.record_key(None, {"household": {"id": 7}}) == b"7"
    assert job.record_key(None, {"household": {"id": "7"}}) == b'"7"'  # not the number 7
    assert job.record_key(None, {"household": None}) is None  # not ordered
    assert CompiledJob(valid_job()).record_key(None, {"id": 1}) is None
    problems = validate(valid_job(ordering_key="$.msg.id"))
    assert {"field": "ordering_key", "message": 'needs "ordering": "key"'} in problems
    assert any(p["field"] == "ordering_key" for p in validate(
        valid_job(ordering="key", ordering_key="$.msg[")))


def test_a_record_to_retry_keeps_the_later_records_of_its_entity_behind_it(
        real_redis: redis.Redis) -> None:
    job = CompiledJob(valid_job(ordering="key", ordering_key="$.msg.id"))
    request = RequestSpec("POST", "http://127.0.0.1:9/x", {}, None, {})
    entities = [b"a", b"b", b"a", b"a", None]
    items = [Pending(0, TaskMessage("t", 0, 0), i, request, None, entity)
             for i, entity in enumerate(entities)]
    attempted = []

    def send(item: Pending) -> Outcome:  # record 0 (entity a) must be retried
        attempted.append(item.index)
        failed = Outcome(item.index, "retry", failed=True)
        return failed if item.index == 0 else Outcome(item.index, "delivered")

    with ThreadPoolExecutor(4) as pool:
        sent, left = Lanes(Permits(real_redis), pool).send_all(job, items, send,
                                                               time.monotonic() + 10, [])
    assert left == []
    outcomes = {item.index: outcome for item, outcome in sent}
    assert sorted(attempted) == [0, 1, 4]  # a's later records (2, 3) were not sent
    assert [outcomes[i].kind for i in range(5)] == ["retry", "delivered", "retry", "retry",
                                                    "delivered"]
    assert not outcomes[2].failed and outcomes[2].retry_after is None  # no attempt counted,
    # and no "retry now" that would cut record 0's backoff short


def ordered_job(endpoint: Any, topic: str, ordering: str) -> dict[str, Any]:
    return simple_job(endpoint, topic, ordering=ordering, datamap={"id": "$.msg.id",
                                                                   "v": "$.msg.v"},
                      url=endpoint.url + "/e/{id}", json_body=["id", "v"])


def arrival_order(endpoint: Any) -> dict[str, list[int]]:
    """Each entity's versions in the order the endpoint answered them 2xx."""
    arrived: dict[str, list[int]] = defaultdict(list)
    for request in endpoint.received:
        body = request.json()
        arrived[body["id"]].append(body["v"])
    return arrived


def versions(keys: int, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` versions of ``keys`` entities, interleaved as updates come."""
    return [(f"k{k}".encode(), b'{"id": "k%d", "v": %d}' % (k, v))
            for v in range(count) for k in range(keys)]


def test_every_keys_versions_arrive_in_order_despite_retries(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given 50 keys x 40 versions, every fifth key's versions answered 503 twice first
    topic = "ordering.key"
    pipeline.create_topic(topic, partitions=2)

    def answer(request: Any, seen: int) -> int:
        key = int(request.path.rsplit("/k", 1)[1])
        return 503 if key % 5 == 0 and seen < 2 else 200

    endpoint.respond = answer
    job = ordered_job(endpoint, topic, "key")
    job.update(retry_backoff=0.05, retry_backoff_max=0.2)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    for key, value in versions(50, 40):
        pipeline.produce(topic, [value], key=key)
    # Then every version arrives, and each key's versions arrive in order
    wait_for(lambda: len(endpoint.received) >= 2000, 180, interval=0.5,
             what="2,000 versions delivered")
    arrived = arrival_order(endpoint)
    assert len(arrived) == 50
    for key, seen in arrived.items():
        assert seen == sorted(seen), f"{key} out of order: {seen}"
        assert sorted(set(seen)) == list(range(40))
    wait_for(lambda: committed(real_redis), 30, what="everything committed")


def test_partition_order_and_a_held_key_does_not_slow_the_others(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given an endpoint refusing key "stuck" for 6 s
    topic = "ordering.held"
    pipeline.create_topic(topic)
    until = time.time() + 6
    endpoint.respond = lambda request, seen: (503 if request.path.endswith("/stuck")
                                              and time.time() < until else 200)
    job = ordered_job(endpoint, topic, "key")
    # (retries enough to outlast the 6 s: ten jittered ones of at most 1 s may not)
    job.update(retry_backoff=0.5, retry_backoff_max=1, max_retries=1000)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, [b'{"id": "stuck", "v": %d}' % v for v in range(5)], key=b"stuck")
    for key, value in versions(10, 10):
        pipeline.produce(topic, [value], key=key)
    # Then the other keys all arrive while "stuck" waits, and status says what is held
    wait_for(lambda: sum(1 for r in endpoint.received
                         if not r.path.endswith("/stuck")) == 100, 20,
             what="the other keys delivered")
    assert time.time() < until, "the other keys waited for the stuck one"
    held = wait_for(lambda: (h := heartbeat.held(real_redis, "people"))["held"] == 4 and h, 5,
                    what="status to show the 4 versions held behind the stuck one")
    assert held["oldest_wait_s"] > 0
    assert time.time() < until
    wait_for(lambda: sum(1 for r in endpoint.received if r.path.endswith("/stuck")) == 5, 30,
             what="the stuck key delivered")
    stuck = [r.json()["v"] for r in endpoint.received if r.path.endswith("/stuck")]
    assert stuck == [0, 1, 2, 3, 4]


def test_partition_mode_keeps_offset_order_per_partition(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    topic = "ordering.partition"
    pipeline.create_topic(topic, partitions=2)
    endpoint.respond = lambda request, seen: 503 if seen == 0 and request.path.endswith(
        "3") else 200
    job = ordered_job(endpoint, topic, "partition")
    job.update(retry_backoff=0.05, retry_backoff_max=0.2)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    for partition in (0, 1):
        pipeline.produce(topic, [b'{"id": "p%d-%d", "v": %d}' % (partition, i, i)
                                 for i in range(60)], partition=partition)
    wait_for(lambda: len(endpoint.received) >= 120, 60, what="120 deliveries")
    for partition in (0, 1):
        seen = [r.json()["v"] for r in endpoint.received
                if r.json()["id"].startswith(f"p{partition}-")]
        assert seen == list(range(60))
    assert endpoint.most_concurrent <= 2  # one at a time per partition


def test_key_order_holds_across_a_worker_and_a_reader_killed(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given 20 keys x 20 versions through a slowish endpoint
    topic = "ordering.faults"
    pipeline.create_topic(topic, partitions=2)
    endpoint.delay = 0.02
    JobStore(real_redis, LOOPBACK).upsert("people", ordered_job(endpoint, topic, "key"))
    pipeline.start_worker()
    pipeline.start_reader()
    for key, value in versions(20, 20):
        pipeline.produce(topic, [value], key=key)
    # When the worker and then the reader are SIGKILLed mid-stream, and replaced
    wait_for(lambda: len(endpoint.received) >= 100, 60, what="deliveries to start")
    pipeline.kill("worker")
    pipeline.start_worker("worker2")
    wait_for(lambda: len(endpoint.received) >= 200, 60, what="more deliveries")
    pipeline.kill("reader")
    pipeline.start_reader("reader2")
    # Then every version arrives, and no key ever goes back to an older version
    # (a version may arrive twice in a row: sent, then sent again after the crash)
    wait_for(lambda: len({r.body for r in endpoint.received}) == 400, 90, interval=0.5,
             what="all 400 versions")
    arrived = arrival_order(endpoint)
    for key, seen in arrived.items():
        assert seen == sorted(seen), f"{key} went back: {seen}"


VERSION_SCHEMA = {"type": "record", "name": "Version", "fields": [
    {"name": "id", "type": "string"}, {"name": "v", "type": "int"}]}


def test_entities_in_containers_arrive_in_order_by_ordering_key_despite_retries(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given Avro containers each carrying versions of several entities (one entity twice),
    # and an endpoint answering 503 twice to every version of every fifth entity
    topic = "ordering.entities"
    pipeline.create_topic(topic, partitions=2)
    failures: dict[tuple[str, int], int] = defaultdict(int)

    def answer(request: Any, seen: int) -> int:
        body = request.json()
        if int(body["id"][1:]) % 5 == 0 and failures[(body["id"], body["v"])] < 2:
            failures[(body["id"], body["v"])] += 1
            return 503
        return 200

    endpoint.respond = answer
    job = ordered_job(endpoint, topic, "key")
    job.update(ordering_key="$.msg.id", retry_backoff=0.05, retry_backoff_max=0.2)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    pipeline.start_worker()
    pipeline.start_reader()
    containers = []
    for m in range(60):
        records = [{"id": f"e{m % 20}", "v": 2 * m}, {"id": f"e{(m + 7) % 20}", "v": 2 * m},
                   {"id": f"e{m % 20}", "v": 2 * m + 1}]
        containers.append(avro_container(records, VERSION_SCHEMA))
    for m, value in enumerate(containers):  # no Kafka key: spread over both partitions
        pipeline.produce(topic, [value], partition=(m // 20) % 2)
    # Then every version arrives, each entity's in order within its partition
    wait_for(lambda: len(endpoint.received) >= 180, 120, interval=0.5,
             what="180 records delivered")
    arrived = arrival_order(endpoint)
    assert sum(len(v) for v in arrived.values()) == 180
    for entity, seen in arrived.items():
        # messages 0-19 and 40-59 are on partition 0, 20-39 on partition 1
        for part in ([v for v in seen if v // 2 < 20 or v // 2 >= 40],
                     [v for v in seen if 20 <= v // 2 < 40]):
            assert part == sorted(part), f"{entity} out of order: {part}"
    assert sum(failures.values()) >= 2 * 12  # the retries happened
    wait_for(lambda: committed(real_redis), 30, what="everything committed")


def test_a_dead_letter_of_an_ordered_job_says_which_messages_waited_behind_it(
        pipeline: Any, endpoint: Any, real_redis: redis.Redis) -> None:
    # Given key "stuck": its first version answered 400 (a dead letter) after 1.5 s, while
    # three later versions wait behind it
    topic = "ordering.lettered"
    pipeline.create_topic(topic)
    endpoint.delay_for = lambda request: 1.5 if request.json()["v"] == 0 else 0
    endpoint.respond = lambda request, seen: 400 if request.json()["v"] == 0 else 200
    JobStore(real_redis, LOOPBACK).upsert("people", ordered_job(endpoint, topic, "key"))
    pipeline.start_worker()
    pipeline.start_reader()
    pipeline.produce(topic, [b'{"id": "stuck", "v": %d}' % v for v in range(4)], key=b"stuck")
    # Then the later versions go after it, and its dead letter names them
    wait_for(lambda: [r.json()["v"] for r in endpoint.received] == [1, 2, 3], 30,
             what="the later versions delivered, in order")
    letters = wait_for(lambda: (found := dead_letters(pipeline, real_redis))
                       and "held_behind" in found[0] and found, 10,
                       what="the dead letter with what waited behind it")
    assert (letters[0]["offset"], letters[0]["held_behind"]) == (0, [1, 2, 3])
