"""Fault injection against the real pipeline: count delivered, lost and duplicated messages.

Every scenario runs real Kafka, Redis, reader and worker processes and a real endpoint, sends
a known set of messages (ids m0…mN), injects one kind of fault, and waits for the pipeline
to deliver. ``lost`` counts ids never answered 2xx; ``duplicates`` counts extra 2xx answers.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from endpoint import RecordingEndpoint  # noqa: E402
from pipeline import Pipeline  # noqa: E402

from conftest import LOOPBACK  # noqa: E402
from rest_consumer import keys  # noqa: E402
from rest_consumer.services import KafkaBroker, RedisServer  # noqa: E402
from rest_consumer.store import JobStore  # noqa: E402

RESULTS = REPO / "faults" / "results"
POISON = (REPO / "tests" / "fixtures" / "poison-truncated.avro").read_bytes()


@dataclass
class Outcome:
    scenario: str
    sent: int
    delivered: int
    lost: int
    duplicates: int
    dead_lettered: int
    seconds: float
    note: str = ""


class Run:
    """One scenario's context: the pipeline, the endpoint, the ids that must arrive."""

    def __init__(self, faults: Faults, name: str, n: int, job: dict[str, Any]) -> None:
        self.poison_ids: set[str] = set()
        self.faults = faults
        self.name = name
        self.n = n
        self.topic = f"faults.{name}"
        self.workdir = faults.workdir / name
        self.workdir.mkdir()
        self.pipe = Pipeline(faults.redis.url, faults.kafka.bootstrap_servers, self.workdir)
        # The shipped defaults, not the tests' shortened ones: the figures are a user's.
        for name_ in ("VISIBILITY_TIMEOUT", "REDISPATCH_AFTER", "RECONCILE_INTERVAL"):
            self.pipe.env.pop(name_, None)
        self.pipe.env["LOG_LEVEL"] = "WARNING"
        self.pipe.create_topic(self.topic, partitions=2)
        self.endpoint = faults.endpoint
        self.job = {"id": f"f-{name}", "owner": "faults", "type": "POST", "topic": [self.topic],
                    "datamap": {"id": "$.msg.id"},
                    "url": self.endpoint.url + f"/{name}/{{id}}",
                    "json_body": ["id"], "retry_backoff": 0.3, "retry_backoff_max": 2,
                    "max_retries": 1000, **job}
        JobStore(faults.client, LOOPBACK).upsert(self.job["id"], self.job)
        self.note = ""

    def values(self, start: int, count: int) -> list[bytes]:
        return [json.dumps({"id": f"m{i}"}).encode() for i in range(start, start + count)]

    def requests(self) -> list[str]:
        """Paths of this scenario's 2xx answers (a previous scenario's stragglers excluded)."""
        return [r.path for r in self.endpoint.received if r.path.startswith(f"/{self.name}/")]

    def delivered_ids(self) -> set[str]:
        return set(self.requests())

    def wait_delivered(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.delivered_ids()) >= count:
                return True
            time.sleep(0.2)
        return False

    def dead_letters(self) -> int:
        return int(self.faults.client.xlen(keys.dead_letters(self.job["id"])))


class Faults:
    def __init__(self, workdir: Path, quick: bool) -> None:
        self.workdir = workdir
        self.quick = quick
        self.redis = RedisServer(workdir / "redis")
        self.redis.start()
        self.kafka = KafkaBroker(workdir / "kafka")
        self.kafka.start()
        self.client = redis.Redis.from_url(self.redis.url)
        self.endpoint = RecordingEndpoint().start()
        self.outcomes: list[Outcome] = []

    def close(self) -> None:
        self.endpoint.stop()
        self.kafka.stop()
        self.redis.stop()

    def scenario(self, name: str, n: int, inject: Callable[[Run], None],
                 job: dict[str, Any] | None = None, workers: int = 1,
                 expect_dead: int = 0, timeout: float = 120) -> Outcome:
        print(f"  {name}: {n} messages …", flush=True)
        self.client.flushall()
        self.endpoint.received.clear()
        self.endpoint.failed.clear()
        self.endpoint.respond = lambda request, seen: 200
        self.endpoint.delay = 0.0
        run = Run(self, name, n, job or {})
        for i in range(workers):
            run.pipe.start_worker(f"worker{i}")
        run.pipe.start_reader()
        started = time.monotonic()
        try:
            inject(run)
            run.wait_delivered(n - expect_dead, timeout)
            time.sleep(1.0)  # let late duplicates land before counting
        finally:
            run.pipe.stop_all()
        got = run.delivered_ids()
        wanted = {f"/{name}/m{i}" for i in range(n)} - run.poison_ids
        outcome = Outcome(name, n, len(got & wanted), len(wanted - got),
                          len(run.requests()) - len(got), run.dead_letters(),
                          round(time.monotonic() - started, 1), run.note)
        self.outcomes.append(outcome)
        print(f"    delivered {outcome.delivered}, lost {outcome.lost}, duplicates "
              f"{outcome.duplicates}, dead letters {outcome.dead_lettered} "
              f"({outcome.seconds}s) {outcome.note}", flush=True)
        return outcome


def _after(run: Run, delivered: int, timeout: float = 60) -> None:
    """Wait until ``delivered`` distinct ids have arrived (the fault strikes under load)."""
    run.wait_delivered(delivered, timeout)


def worker_sigkill(run: Run) -> None:
    run.endpoint.delay = 0.005
    run.pipe.produce(run.topic, run.values(0, run.n))
    for round_ in range(3):
        _after(run, run.n * (round_ + 1) // 5)
        name = f"worker{round_ % 2}"
        if name in run.pipe.procs:
            run.pipe.kill(name)
        run.pipe.start_worker(f"{name}")
    run.note = "3 SIGKILLs"


def reader_sigkill(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n // 2))
    _after(run, run.n // 5)
    run.pipe.kill("reader")
    run.pipe.produce(run.topic, run.values(run.n // 2, run.n - run.n // 2))
    time.sleep(2)
    run.pipe.start_reader("reader")


def redis_restart(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n))
    _after(run, run.n // 4)
    run.faults.redis.kill()  # SIGKILL: only what AOF fsynced (every second) survives
    time.sleep(2)
    run.faults.redis.start()
    run.note = "SIGKILL, AOF everysec"


def redis_data_loss(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n))
    _after(run, run.n // 4)
    run.faults.client.flushall()
    run.note = "FLUSHALL"


def endpoint_outage(run: Run) -> None:
    seconds = 10 if run.faults.quick else 30
    run.pipe.produce(run.topic, run.values(0, run.n // 4))
    _after(run, run.n // 8)
    endpoint = run.faults.endpoint
    port = endpoint.server.server_address[1]
    endpoint.stop()  # connection refused from now on
    baseline = int(run.faults.client.info("memory")["used_memory"])
    run.pipe.produce(run.topic, run.values(run.n // 4, run.n - run.n // 4))
    peak = baseline
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        peak = max(peak, int(run.faults.client.info("memory")["used_memory"]))
        time.sleep(0.25)
    fresh = RecordingEndpoint(port).start()
    fresh.received = endpoint.received
    fresh.failed = endpoint.failed
    run.faults.endpoint = run.endpoint = fresh
    run.note = f"{seconds}s refused; Redis grew {(peak - baseline) / 1024:.0f} KiB at most"


def storm_503(run: Run) -> None:
    rand = random.Random(7)
    run.endpoint.respond = lambda request, seen: 503 if rand.random() < 0.6 else 200
    run.pipe.produce(run.topic, run.values(0, run.n))
    run.note = "60% of answers 503"


def slow_endpoint(run: Run) -> None:
    rand = random.Random(8)

    def answer(request: Any, seen: int) -> int:
        if rand.random() < 0.2:
            time.sleep(1.5)  # longer than the job's 1 s timeout
        return 200

    run.endpoint.respond = answer
    run.pipe.produce(run.topic, run.values(0, run.n))
    run.note = "20% of answers after 1.5 s, timeout 1 s"


def poison(run: Run) -> None:
    values = run.values(0, run.n)
    for i in range(0, run.n, 10):
        values[i] = POISON
        run.poison_ids.add(f"/{run.name}/m{i}")
    run.pipe.produce(run.topic, values)
    run.note = f"{len(run.poison_ids)} poison messages"


def kafka_restart(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n // 2))
    _after(run, run.n // 4)
    run.faults.kafka.stop()
    time.sleep(3)
    run.faults.kafka.start()
    run.pipe.produce(run.topic, run.values(run.n // 2, run.n - run.n // 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 10 minutes)")
    args = parser.parse_args()
    n = 600 if args.quick else 3000
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rc-faults-") as tmp:
        faults = Faults(Path(tmp), args.quick)
        try:
            faults.scenario("worker_sigkill", n, worker_sigkill, workers=2)
            faults.scenario("reader_sigkill", n, reader_sigkill)
            faults.scenario("redis_restart_aof", n, redis_restart, timeout=150)
            faults.scenario("redis_data_loss", n, redis_data_loss)
            faults.scenario("endpoint_outage", n, endpoint_outage,
                            job={"max_in_flight": 200}, timeout=180)
            faults.scenario("storm_503", n // 2, storm_503, workers=2)
            faults.scenario("slow_endpoint", n // 3, slow_endpoint, job={"timeout": 1})
            faults.scenario("poison", n, poison, expect_dead=n // 10)
            faults.scenario("kafka_restart", n, kafka_restart, timeout=180)
        finally:
            faults.close()
    report(faults.outcomes)


def report(outcomes: list[Outcome]) -> None:
    lines = ["| scenario | sent | delivered | lost | duplicates | dead letters | seconds | "
             "note |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {o.scenario} | {o.sent} | {o.delivered} | {o.lost} | {o.duplicates} | "
              f"{o.dead_lettered} | {o.seconds} | {o.note} |" for o in outcomes]
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    print(f"RESULT scenarios={len(outcomes)} lost={sum(o.lost for o in outcomes)} "
          f"duplicates={sum(o.duplicates for o in outcomes)}")


if __name__ == "__main__":
    main()
