"""Hostile data from Kafka, table-driven, through the real pipeline (Kafka, Redis, a reader and
a prefork worker, a loopback endpoint). Every case names its message and its outcome: a dead
letter with a reason, or a delivery of a stated shape. The good messages produced between the
cases are all delivered, no process dies, and no secret reaches logs, queued tasks, dead
letters or API responses."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import pytest
import redis
from endpoint import Received, RecordingEndpoint
from pipeline import Pipeline
from test_pipeline import committed

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.core.config import Settings
from rest_consumer.state import keys
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

TOPIC = "hostile.data"
SECRETS = ("tok-SECRET-hostile", "key-SECRET-hostile", "qk-SECRET-hostile")
AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}
CATASTROPHIC = "a" * 40 + "b"  # `^(a+)+$` backtracks for ever on it


def hostile_job(endpoint: RecordingEndpoint) -> dict[str, Any]:
    port = endpoint.url.rsplit(":", 1)[1]
    return {
        "id": "hostile", "owner": "tests", "type": "POST", "topic": [TOPIC],
        "datamap": {"id": "$.msg.id", "h": "$.msg.h", "seg": "$.msg.seg", "name": "$.msg.name",
                    "pick": "$.msg.s.`sub(/a/, b)`",
                    "who": '$.msg.tags[?(@.name =~ "^(a+)+$")].name',
                    "home": "$.msg.home", "work": "$.msg.work", "by_kind": "$.msg.by_kind"},
        "url": f"http://x{{h}}.localhost:{port}/items/{{seg}}?api_key={SECRETS[2]}",
        "json_body": ["id", "name", "pick", "home", "work", "by_kind"],
        "headers": {"X-Name": "{name}"},
        "secret_headers": {"X-Api-Key": SECRETS[1]},
        "token": SECRETS[0],
        "emit_flag": {"path": "$.msg.flags[/level][*].ok", "values": [True]},
        "mask_levels": [0, 1, 2, 3], "emit_level": 1,
        "retry_backoff": 0.2, "retry_backoff_max": 1,
    }


def record(case: str, **overrides: Any) -> dict[str, Any]:
    """A record that is delivered unless an override makes it hostile."""
    base = {"id": case, "h": "host", "seg": case, "name": "ok", "s": "abc",
            "tags": [{"name": "ok"}], "flags": [{"level": 1, "ok": True}]}
    return {**base, **overrides}


def as_json(case: str, **overrides: Any) -> bytes:
    return json.dumps(record(case, **overrides)).encode()


ADDRESS = {"type": "record", "name": "Address", "fields": [
    {"name": "street", "type": "string", "aetherMaskingLevel": 3},
    {"name": "city", "type": "string"}]}
HOSTILE_SCHEMA = {"type": "record", "name": "Hostile", "namespace": "org.eha", "fields": [
    {"name": "id", "type": "string"}, {"name": "h", "type": "string"},
    {"name": "seg", "type": "string"}, {"name": "name", "type": "string"},
    {"name": "s", "type": "string"},
    {"name": "tags", "type": {"type": "array", "items": {"type": "record", "name": "Tag",
                                                         "fields": [{"name": "name",
                                                                     "type": "string"}]}}},
    {"name": "flags", "type": {"type": "array", "items": {"type": "record", "name": "Flag",
                                                          "fields": [
                                                              {"name": "level", "type": "int"},
                                                              {"name": "ok",
                                                               "type": "boolean"}]}}},
    {"name": "home", "type": ["null", ADDRESS], "default": None},
    {"name": "work", "type": ["null", "Address"], "default": None},
    {"name": "by_kind", "type": {"type": "map", "values": "org.eha.Address"}, "default": {}},
]}


def avro(schema: Any, records: list[Any], codec: str = "deflate") -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, records, codec=codec)
    return buffer.getvalue()


def avro_case(case: str, **overrides: Any) -> bytes:
    return avro(HOSTILE_SCHEMA, [{"home": None, "work": None, "by_kind": {},
                                  **record(case, **overrides)}])


def avro_long(n: int) -> bytes:
    """One Avro ``long``: a zig-zag varint."""
    n, out = (n << 1) ^ (n >> 63), bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def raw_container(schema: Any, data: bytes, count: int = 1, codec: str = "null") -> bytes:
    """An Avro container around hand-made block bytes (what no honest writer produces)."""
    from rest_consumer.core.decoding import _HEADER_SCHEMA

    buffer, sync = io.BytesIO(), b"S" * 16
    fastavro.schemaless_writer(buffer, _HEADER_SCHEMA, {
        "magic": b"Obj\x01", "sync": sync,
        "meta": {"avro.schema": json.dumps(schema).encode(), "avro.codec": codec.encode()}})
    buffer.write(avro_long(count) + avro_long(len(data)) + data + sync)
    return buffer.getvalue()


def deep_json(depth: int) -> bytes:
    value: Any = "x"
    for _ in range(depth):
        value = {"d": value}
    return json.dumps(value).encode()


NODE = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
ADDRESS_SEEN = {"street": "1 Main St", "city": "Kano"}


@dataclass(frozen=True)
class DataCase:
    """One Kafka message and its outcome: a dead letter whose reason holds ``dead_letter``,
    or a delivery for which ``delivered`` holds."""

    name: str
    value: bytes | None
    dead_letter: str | None = None
    delivered: Callable[[Received], bool] | None = None


DATA_CASES = [
    DataCase("host label with brackets", as_json("c1", h="[v1.attacker.com]"), "host label"),
    DataCase("IPv6 literal as host label", as_json("c2", h="[::ffff:127.0.0.1]"),
             "host label"),
    DataCase("dotted name as host label", as_json("c3", h="host.attacker.com"), "host label"),
    DataCase("port in host label", as_json("c4", h="host:9"), "host label"),
    DataCase("userinfo in host label", as_json("c5", h="x@attacker.com"), "host label"),
    DataCase("fragment in host label", as_json("c6", h="attacker.com#"), "host label"),
    DataCase("empty host label", as_json("c7", h=""), "host label"),
    DataCase("host label missing", json.dumps({k: v for k, v in record("c8").items()
                                               if k != "h"}).encode(), "has no value"),
    DataCase("'..' as a path segment", as_json("c9", seg=".."), "'.' or '..'"),
    DataCase("'.' as a path segment", as_json("c10", seg="."), "'.' or '..'"),
    DataCase("slashes in a path value stay in one segment", as_json("c11", seg="../../admin"),
             delivered=lambda r: r.path == "/items/..%2F..%2Fadmin"),
    DataCase("non-ASCII path value is percent-encoded", as_json("c12", seg="日本"),
             delivered=lambda r: r.path == "/items/%E6%97%A5%E6%9C%AC"),
    DataCase("header value that is not Latin-1", as_json("c13", name="José €"), "Latin-1"),
    DataCase("line break in a header value", as_json("c14", name="a\r\nX-Evil: 1"),
             "line break"),
    DataCase("Latin-1 header value", as_json("c15", name="José"),
             delivered=lambda r: r.headers["X-Name"] == "José"),
    DataCase("object as header value", as_json("c16", name={"a": 1}),
             delivered=lambda r: r.headers["X-Name"] == '{"a":1}'),
    DataCase("emit_flag path that raises",
             as_json("c17", flags=[{"level": 1, "ok": True}, {"level": "x", "ok": True}]),
             "emit_flag path failed"),
    DataCase("emit flag says no", as_json("c18", flags=[{"level": 1, "ok": False}]),
             delivered=None),
    DataCase("datamap path that raises", as_json("c19", s=5), "datamap 'pick' failed"),
    DataCase("JSONPath regex that backtracks for ever",
             as_json("c20", tags=[{"name": CATASTROPHIC}]), "time limit"),
    DataCase("JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    DataCase("JSON nested 150 deep", deep_json(150), "nested deeper"),
    DataCase("bytes that are no text", b"\xff\xfe\x00garbage\x80", "neither Avro"),
    DataCase("tombstone", None, "tombstone"),
    DataCase("truncated Avro container", avro_case("c25")[:-40], "corrupt Avro"),
    DataCase("deflate bomb", avro({"type": "record", "name": "B", "fields": [
        {"name": "s", "type": "string"}]}, [{"s": "a" * (20 * 1024 * 1024)}]),
        "DECODE_MAX_BYTES"),
    DataCase("container with too many records",
             avro({"type": "record", "name": "N", "fields": [{"name": "n", "type": "int"}]},
                  [{"n": i} for i in range(10_001)]), "DECODE_MAX_RECORDS"),
    DataCase("array of zero-byte items claiming a billion",
             raw_container({"type": "record", "name": "Z", "fields": [
                 {"name": "a", "type": {"type": "array", "items": "null"}}]},
                 b"\x80\xa8\xd6\xb9\x07\x00"), "DECODE_MAX_ITEMS"),
    DataCase("recursive record nested 100,000 deep",
             raw_container(NODE, b"\x02" * 100_000 + b"\x00"), "RecursionError"),
    DataCase("unsupported Avro codec", raw_container(NODE, b"\x00", codec="snappy"),
             "unsupported Avro codec"),
    DataCase("masked field in a named type used twice and in a map",
             avro_case("c31", home=ADDRESS_SEEN, work=ADDRESS_SEEN,
                       by_kind={"old": ADDRESS_SEEN}),
             delivered=lambda r: r.json()["home"] == r.json()["work"] == {"city": "Kano"}
             and r.json()["by_kind"] == {"old": {"city": "Kano"}}),
    DataCase("endpoint answers 400", as_json("c32", seg="reject"), "HTTP 400"),
]
GOOD_BETWEEN = 3


@dataclass
class Run:
    """What the pipeline did with every case."""

    offsets: dict[str, int]
    letters: dict[int, dict[str, Any]]
    received: dict[int, Received]
    good: int
    api_bodies: list[str]
    queued: list[bytes]
    logs: str


def _values() -> tuple[list[bytes | None], dict[str, int], int]:
    values: list[bytes | None] = []
    offsets = {}
    for i, case in enumerate(DATA_CASES):
        values += [as_json(f"good-{i}-{n}") for n in range(GOOD_BETWEEN)]
        offsets[case.name] = len(values)
        values.append(case.value)
    values += [avro_case(f"good-avro-{n}") for n in range(GOOD_BETWEEN)]
    good = len(values) - len(DATA_CASES)
    return values, offsets, good


def _sample_queues(client: redis.Redis, into: list[bytes]) -> None:
    """The task messages waiting in the queue or held by workers, their bodies decoded."""
    for raw in [*client.lrange("rest_consumer", 0, -1), *client.hvals("unacked")]:
        message = json.loads(raw)
        message = message[0] if isinstance(message, list) else message  # unacked: [msg, ...]
        into.append(raw + base64.b64decode(message.get("body", "")))


@pytest.fixture(scope="module")
def run(redis_url: str, kafka_bootstrap: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    endpoint = RecordingEndpoint().start()
    endpoint.respond = lambda request, seen: 400 if request.path.endswith("/reject") else 200
    pipe = Pipeline(redis_url, kafka_bootstrap, tmp_path_factory.mktemp("hostile"))
    try:
        pipe.create_topic(TOPIC)
        JobStore(client, LOOPBACK).upsert("hostile", hostile_job(endpoint))
        pipe.start_worker()
        pipe.start_reader()
        values, offsets, good = _values()
        pipe.produce(TOPIC, values)  # type: ignore[arg-type]
        queued: list[bytes] = []

        def finished() -> bool:
            _sample_queues(client, queued)
            letters = client.zcard(keys.dead_letter_index("hostile"))
            expected = sum(1 for c in DATA_CASES if c.dead_letter)
            return letters >= expected and committed(client, "hostile")

        wait_for(finished, 120, interval=0.5, what="every hostile case to reach its outcome")
        time.sleep(1)  # a late duplicate or a crash would show now
        for name in ("worker", "reader"):
            assert pipe.procs[name].poll() is None, f"the {name} died"
        yield _collect(client, pipe, endpoint, offsets, good, queued)
    finally:
        pipe.stop_all()
        endpoint.stop()
        client.close()


def _collect(client: redis.Redis, pipe: Pipeline, endpoint: RecordingEndpoint,
             offsets: dict[str, int], good: int, queued: list[bytes]) -> Run:
    settings = Settings(redis_url=pipe.env["REDIS_URL"], api_token=AUTH["Authorization"][7:],
                        destination_allowlist=LOOPBACK, kafka_bootstrap_servers=pipe.kafka,
                        consumer_group_prefix=pipe.env["CONSUMER_GROUP_PREFIX"],
                        jobs_dir=pipe.workdir / "jobs")
    api = create_app(settings, store=JobStore(client, LOOPBACK)).test_client()
    bodies = [api.get(path, headers=AUTH).get_data(as_text=True)
              for path in ("/job/hostile", "/jobs", "/job/hostile/status",
                           "/job/hostile/dead_letters?limit=500", "/metrics")]
    letters = json.loads(bodies[3])["dead_letters"]
    received = {int(r.headers["Idempotency-Key"].split(":")[3]): r for r in endpoint.received}
    return Run(offsets, {letter["offset"]: letter for letter in letters}, received, good,
               bodies, queued, pipe.log("worker") + pipe.log("reader"))


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.name for c in DATA_CASES])
def test_each_hostile_message_gets_its_outcome(run: Run, case: DataCase) -> None:
    offset = run.offsets[case.name]
    letter = run.letters.get(offset)
    if case.dead_letter is not None:
        assert letter is not None, f"no dead letter for {case.name}"
        assert case.dead_letter in letter["reason"], letter["reason"]
        assert offset not in run.received
    elif case.delivered is not None:
        assert letter is None, letter
        assert case.delivered(run.received[offset])
    else:  # filtered out: neither delivered nor dead-lettered
        assert letter is None and offset not in run.received


def test_every_good_message_around_the_hostile_ones_is_delivered_once(run: Run) -> None:
    hostile = set(run.offsets.values())
    good = [o for o in run.received if o not in hostile]
    assert len(good) == run.good == len(set(good))
    for offset in good:
        request = run.received[offset]
        assert request.headers["Authorization"] == f"Bearer {SECRETS[0]}"
        assert request.headers["X-Api-Key"] == SECRETS[1]
        assert request.query["api_key"] == [SECRETS[2]]


def test_a_dead_letter_shows_the_request_with_its_secrets_redacted(run: Run) -> None:
    letter = run.letters[run.offsets["endpoint answers 400"]]
    assert letter["status"] == 400
    assert letter["request"]["headers"]["Authorization"] == "***"
    assert letter["request"]["headers"]["X-Api-Key"] == "***"
    assert letter["request"]["url"].endswith("/items/reject?api_key=***")


def test_no_secret_in_logs_queued_tasks_dead_letters_or_api_responses(run: Run) -> None:
    for secret in SECRETS:
        assert secret not in run.logs
        assert all(secret.encode() not in task for task in run.queued)
        for body in run.api_bodies:
            assert secret not in body
    assert run.queued, "the queues were never seen holding a task"


def test_failures_are_logged_with_job_and_offset(run: Run) -> None:
    offset = run.offsets["header value that is not Latin-1"]
    assert f"job hostile {TOPIC}[0]@{offset}" in run.logs


