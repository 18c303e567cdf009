"""Fault injection against the real pipeline: count delivered, lost and duplicated messages.

Every scenario runs real Kafka, Redis, reader and worker processes (with the settings a user
runs) and a real endpoint, sends a known set of messages (ids m0…mN), injects faults, and
waits until the pipeline is quiet: every message delivered (or dead-lettered), the committed
offsets at the end of the topic, no request for a few seconds. ``lost`` counts ids never
answered 2xx; ``duplicates`` counts extra 2xx answers; ``recovery_s`` is the time from the
last fault to the last message delivered; each scenario also checks its committed offsets
and its dead letters.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import threading
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
from rest_consumer.core.config import Settings  # noqa: E402
from rest_consumer.devtools.services import KafkaBroker, RedisServer  # noqa: E402
from rest_consumer.state.deadletterqueue import DeadLetterQueue  # noqa: E402
from rest_consumer.state.offsets import partition_status  # noqa: E402
from rest_consumer.state.store import JobStore  # noqa: E402

RESULTS = REPO / "faults" / "results"
QUIET_SECONDS = 5.0
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
    recovery_s: float
    """From the last fault to the last message delivered (0 without a fault)."""
    committed_at_end: bool
    dead_letters_as_expected: bool
    note: str = ""
    in_flight: int = 0
    """Requests the endpoint had received and not answered at the faults' moments."""
    last_second: int = 0
    """Requests answered within the second before a fault that can lose Redis's last
    second (a Redis SIGKILL with AOF ``everysec``, a data loss)."""

    @property
    def floor(self) -> int:
        """What no design could avoid sending again: ``in_flight`` + ``last_second``."""
        return self.in_flight + self.last_second


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
        self.pipe.env["LOG_LEVEL"] = os.environ.get("FAULTS_LOG_LEVEL", "WARNING")
        self.pipe.create_topic(self.topic, partitions=2)
        self.settings = Settings(redis_url=faults.redis.url,
                                 kafka_bootstrap_servers=faults.kafka.bootstrap_servers,
                                 consumer_group_prefix=self.pipe.env["CONSUMER_GROUP_PREFIX"],
                                 destination_allowlist=LOOPBACK)
        self.endpoint = faults.endpoint
        self.job = {"id": f"f-{name}", "owner": "faults", "type": "POST", "topic": [self.topic],
                    "datamap": {"id": "$.msg.id"},
                    "url": self.endpoint.url + f"/{name}/{{id}}",
                    "json_body": ["id"], "retry_backoff": 0.3, "retry_backoff_max": 2,
                    "max_retries": 1000, **job}
        JobStore.for_settings(faults.client, self.settings).upsert(self.job["id"], self.job)
        self.note = ""
        self.struck = 0.0
        self.recovered = 0.0
        self.strikes: list[tuple[str, float]] = []
        self.moments: list[tuple[float, bool]] = []
        """When each fault struck (wall clock), and whether it may lose Redis's last second."""
        self.breakdown = False
        """Whether the note lists the duplicates by the fault before them."""

    def fault(self, loses_last_second: bool = False) -> None:
        """A fault strikes now (the floor is taken at this moment)."""
        self.moments.append((time.time(), loses_last_second))

    def floor(self) -> tuple[int, int]:
        """(in flight, answered in the last second) at the faults' moments."""
        answered = [(r.at, r.at + self.endpoint.delay) for r in self.endpoint.received
                    if r.path.startswith(f"/{self.name}/")]
        in_flight = last_second = 0
        for moment, loses in self.moments:
            in_flight += sum(1 for at, done in answered if at <= moment < done + 0.001)
            if loses:
                last_second += sum(1 for _, done in answered if moment - 1 <= done < moment)
        return in_flight, last_second

    def strike(self, name: str = "fault") -> None:
        """A fault happened (or ended) now."""
        self.struck = time.monotonic()
        self.strikes.append((name, time.time()))

    def duplicates_by_fault(self) -> dict[str, int]:
        """Each extra 2xx answer, counted against the last fault before it arrived."""
        seen: set[str] = set()
        counts: dict[str, int] = {}
        for request in sorted(self.endpoint.received, key=lambda r: r.at):
            if not request.path.startswith(f"/{self.name}/"):
                continue
            if request.path in seen:
                before = [name for name, at in self.strikes if at <= request.at]
                cause = before[-1] if before else "before any fault"
                counts[cause] = counts.get(cause, 0) + 1
            seen.add(request.path)
        return counts

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
                self.recovered = time.monotonic()
                return True
            time.sleep(0.2)
        self.recovered = time.monotonic()  # not recovered: the whole wait counts
        return False

    def dead_letters(self) -> int:
        return DeadLetterQueue(self.faults.client, self.settings.kafka_client_config(),
                               self.settings.consumer_group_prefix, self.job["id"]).count()

    def committed_at_end(self) -> bool:
        rows = partition_status(self.settings, self.job)
        return bool(rows) and all(r["lag"] == 0 for r in rows)

    def wait_quiet(self, expect_dead: int, timeout: float) -> tuple[bool, bool]:
        """Until offsets are committed to the end, the dead letters are in and no request
        has arrived for QUIET_SECONDS; returns (committed at end, dead letters as expected)."""
        deadline = time.monotonic() + timeout
        committed = dead_ok = False
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            committed = self.committed_at_end()
            dead_ok = self.dead_letters() == expect_dead
            count = len(self.endpoint.received) + len(self.endpoint.failed)
            if count != seen:
                seen, since = count, time.monotonic()
            if committed and dead_ok and time.monotonic() - since >= QUIET_SECONDS:
                break
            time.sleep(0.5)
        return committed, dead_ok


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
        self.endpoint.delay_for = None
        run = Run(self, name, n, job or {})
        for i in range(workers):
            run.pipe.start_worker(f"worker{i}")
        run.pipe.start_reader()
        started = time.monotonic()
        try:
            inject(run)
            run.wait_delivered(n - expect_dead, timeout)
            committed, dead_ok = run.wait_quiet(expect_dead, 120)
            dead = run.dead_letters()
        finally:
            run.pipe.stop_all()
        if os.environ.get("FAULTS_KEEP"):  # for a look at what came twice, and when
            (run.workdir / "received.json").write_text(json.dumps(
                [(r.path, r.at) for r in run.endpoint.received
                 if r.path.startswith(f"/{name}/")]))
            (run.workdir / "moments.json").write_text(json.dumps(run.moments))
        got = run.delivered_ids()
        wanted = {f"/{name}/m{i}" for i in range(n)} - run.poison_ids
        recovery = run.recovered - run.struck if run.struck and run.recovered else 0.0
        if run.breakdown:
            run.note += "; duplicates after: " + ", ".join(
                f"{name} {count}" for name, count in run.duplicates_by_fault().items())
        outcome = Outcome(name, n, len(got & wanted), len(wanted - got),
                          len(run.requests()) - len(got), dead,
                          round(time.monotonic() - started, 1), round(max(recovery, 0.0), 1),
                          committed, dead_ok, run.note, *run.floor())
        self.outcomes.append(outcome)
        print(f"    delivered {outcome.delivered}, lost {outcome.lost}, duplicates "
              f"{outcome.duplicates} (floor {outcome.floor}), dead letters "
              f"{outcome.dead_lettered}, recovery "
              f"{outcome.recovery_s}s, committed to the end {committed}, dead letters as "
              f"expected {dead_ok} ({outcome.seconds}s) {outcome.note}", flush=True)
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
            run.fault()
            run.pipe.kill(name)
        run.strike()
        run.pipe.start_worker(f"{name}")
    run.note = "3 SIGKILLs"


def worker_sigkill_holding_retries(run: Run) -> None:
    """Every message fails once (503) and waits 20 s for its retry; meanwhile the only
    worker is SIGKILLed and a new one started: the retries wait in Redis, not in it."""
    run.endpoint.respond = lambda request, seen: 503 if seen == 0 else 200
    run.pipe.produce(run.topic, run.values(0, run.n))
    deadline = time.monotonic() + 60
    while len(run.endpoint.failed) < run.n and time.monotonic() < deadline:
        time.sleep(0.2)
    run.fault()
    run.pipe.kill("worker0")
    run.strike()
    run.pipe.start_worker("worker0")
    run.note = "retry_backoff 20 s, endpoint health off; SIGKILL after every first attempt failed"


def reader_sigkill(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n // 2))
    _after(run, run.n // 5)
    run.fault()
    run.pipe.kill("reader")
    run.pipe.produce(run.topic, run.values(run.n // 2, run.n - run.n // 2))
    time.sleep(2)
    run.pipe.start_reader("reader")
    run.strike()


def redis_restart(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n))
    _after(run, run.n // 4)
    run.fault(loses_last_second=True)
    run.faults.redis.kill()  # SIGKILL: only what AOF fsynced (every second) survives
    time.sleep(2)
    run.faults.redis.start()
    run.strike()
    run.note = "SIGKILL, AOF everysec"


def redis_data_loss(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n))
    _after(run, run.n // 4)
    run.fault(loses_last_second=True)
    run.faults.client.flushall()
    run.strike()
    run.note = "FLUSHALL"


def redis_replaced_by_empty(run: Run) -> None:
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n))
    _after(run, run.n // 4)
    run.fault(loses_last_second=True)
    run.faults.redis.kill()
    shutil.rmtree(run.faults.redis.workdir)  # its AOF too: a new, empty server
    time.sleep(2)
    run.faults.redis.start()
    run.strike()
    run.note = "SIGKILL, data directory removed, empty server on the same port"


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
    run.strike()
    run.note = f"{seconds}s refused; Redis grew {(peak - baseline) / 1024:.0f} KiB at most"


def storm_503(run: Run) -> None:
    rand = random.Random(7)
    run.endpoint.respond = lambda request, seen: 503 if rand.random() < 0.6 else 200
    run.pipe.produce(run.topic, run.values(0, run.n))
    run.note = "60% of answers 503"


def slow_endpoint(run: Run) -> None:
    rand = random.Random(8)
    # 20% answered after 1.5 s, longer than the job's 1 s timeout
    run.endpoint.delay_for = lambda request: 1.5 if rand.random() < 0.2 else 0.0
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
    _bounce_kafka(run, run.faults.kafka.stop)


def kafka_sigkill(run: Run) -> None:
    _bounce_kafka(run, run.faults.kafka.kill)
    run.note = "SIGKILL, restarted 3 s later"


def _bounce_kafka(run: Run, stop: Callable[[], None]) -> None:
    """Stop the broker under load (cleanly or not), start it 3 s later, produce the rest."""
    run.endpoint.delay = 0.003
    run.pipe.produce(run.topic, run.values(0, run.n // 2))
    _after(run, run.n // 4)
    run.fault()
    stop()
    time.sleep(3)
    run.faults.kafka.start()
    run.strike()
    run.pipe.produce(run.topic, run.values(run.n // 2, run.n - run.n // 2))


RATE = 40
"""Messages per second in the mixed run, as the issue that asked for it measured."""


def mixed(run: Run) -> None:
    """A steady stream while six faults strike one after another."""
    step = run.n / RATE / 7  # the faults spread over the stream
    producer = threading.Thread(target=_stream, args=(run,), daemon=True)
    producer.start()
    faults: list[tuple[str, Callable[[], None], bool]] = [
        ("worker0 SIGKILL", lambda: _restart_worker(run, "worker0"), False),
        ("endpoint 503 for 8 s", lambda: _fail_endpoint(run, 8.0), False),
        ("reader SIGKILL", lambda: _restart_reader(run), False),
        ("Redis SIGKILL (AOF)", lambda: _restart_redis(run), True),
        ("FLUSHALL", lambda: _flush(run), True),
        ("worker1 SIGKILL", lambda: _restart_worker(run, "worker1"), False),
    ]
    for name, strike, loses in faults:
        time.sleep(step)
        print(f"    {name}", flush=True)
        run.fault(loses_last_second=loses)
        strike()
        run.strike(name)
    producer.join()
    run.note = f"{RATE} msg/s; " + ", ".join(name for name, _, _ in faults)
    run.breakdown = True


def _stream(run: Run) -> None:
    per_tick = max(1, RATE // 10)
    start = time.monotonic()
    for i in range(0, run.n, per_tick):
        run.pipe.produce(run.topic, run.values(i, min(per_tick, run.n - i)))
        time.sleep(max(0.0, start + (i + per_tick) / RATE - time.monotonic()))


def _restart_worker(run: Run, name: str) -> None:
    run.pipe.kill(name)
    run.pipe.start_worker(name)


def _restart_reader(run: Run) -> None:
    run.pipe.kill("reader")
    time.sleep(1)
    run.pipe.start_reader("reader")


def _restart_redis(run: Run) -> None:
    run.faults.redis.kill()
    time.sleep(1)
    run.faults.redis.start()


def _flush(run: Run) -> None:
    run.faults.client.flushall()


def _fail_endpoint(run: Run, seconds: float) -> None:
    until = time.monotonic() + seconds
    run.endpoint.respond = lambda request, seen: 503 if time.monotonic() < until else 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 15 minutes)")
    parser.add_argument("--only", help="run only the scenarios named (comma-separated)")
    parser.add_argument("--publish", action="store_true",
                        help="copy the results to docs/results/faults/")
    args = parser.parse_args()
    n = 600 if args.quick else 3000
    scenarios: list[tuple[str, int, Callable[[Run], None], dict[str, Any]]] = [
        ("worker_sigkill", n, worker_sigkill, {"workers": 2}),
        ("worker_sigkill_holding_retries", n // 3, worker_sigkill_holding_retries,
         # endpoint health off: an endpoint failing every record's first attempt opens the
         # breaker (whose probe is then a first attempt too) and shrinks the adaptive limit to
         # one; this scenario is about the retry schedule surviving a worker
         {"job": {"retry_backoff": 20, "retry_backoff_max": 20, "breaker_failures": 0,
                  "adaptive": False}}),
        ("reader_sigkill", n, reader_sigkill, {}),
        ("redis_restart_aof", n, redis_restart, {"timeout": 150}),
        ("redis_data_loss", n, redis_data_loss, {}),
        ("redis_replaced_by_empty", n, redis_replaced_by_empty, {}),
        ("endpoint_outage", n, endpoint_outage, {"job": {"max_in_flight": 200},
                                                 "timeout": 180}),
        ("storm_503", n // 2, storm_503, {"workers": 2}),
        ("slow_endpoint", n // 3, slow_endpoint, {"job": {"timeout": 1}}),
        ("poison", n, poison, {"expect_dead": n // 10}),
        ("kafka_restart", n, kafka_restart, {"timeout": 180}),
        ("kafka_sigkill", n, kafka_sigkill, {"timeout": 180}),
        ("mixed", 1200 if args.quick else 3000, mixed, {"workers": 2, "timeout": 240}),
    ]
    only = set(args.only.split(",")) if args.only else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    keep = os.environ.get("FAULTS_KEEP")  # a directory: the processes' logs stay there
    with (contextlib.nullcontext(keep) if keep
          else tempfile.TemporaryDirectory(prefix="rc-faults-")) as tmp:
        faults = Faults(Path(tmp), args.quick)
        try:
            for name, count, inject, options in scenarios:
                if only is None or name in only:
                    faults.scenario(name, count, inject, **options)
        finally:
            faults.close()
    report(faults.outcomes)
    if args.publish:
        target = REPO / "docs" / "results" / "faults"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("results.md", "results.json"):
            shutil.copy(RESULTS / name, target / name)
        print(f"  published to {target}")


def report(outcomes: list[Outcome]) -> None:
    lines = [f"# Fault run of {datetime.date.today().isoformat()}", "",
             "| scenario | sent | delivered | lost | duplicates | floor (in flight + last "
             "second) | dead letters | recovery s | committed to the end | dead letters as "
             "expected | seconds | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|"]
    lines += [f"| {o.scenario} | {o.sent} | {o.delivered} | {o.lost} | {o.duplicates} | "
              f"{o.floor} ({o.in_flight} + {o.last_second}) | "
              f"{o.dead_lettered} | {o.recovery_s} | {_yes(o.committed_at_end)} | "
              f"{_yes(o.dead_letters_as_expected)} | {o.seconds} | {o.note} |"
              for o in outcomes]
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps(
        [{**asdict(o), "floor": o.floor} for o in outcomes], indent=2))
    failed = [o.scenario for o in outcomes
              if not (o.committed_at_end and o.dead_letters_as_expected)]
    print(f"RESULT scenarios={len(outcomes)} lost={sum(o.lost for o in outcomes)} "
          f"duplicates={sum(o.duplicates for o in outcomes)} "
          f"floor={sum(o.floor for o in outcomes)} "
          f"max_recovery_s={max((o.recovery_s for o in outcomes), default=0)} "
          f"checks_failed={len(failed)}{' (' + ','.join(failed) + ')' if failed else ''}")


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


if __name__ == "__main__":
    main()
