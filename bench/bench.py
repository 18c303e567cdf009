"""rest-consumer benchmark: end-to-end throughput, latency, CPU and memory, with baselines.

Everything runs on this machine in one process tree: Kafka, Redis, nginx (the sink), the
pipeline under test. Figures are reported as ratios against baselines run in the same run.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import console
import hotspots
import publish
from harness import (
    REPO,
    Nginx,
    ProcessWatch,
    SinkLog,
    SlowSink,
    create_topic,
    produce,
    produce_steadily,
    rest_consumer,
    spawn,
    stop_all,
    wait_until,
)

from rest_consumer.core.destinations import Allowlist
from rest_consumer.devtools.services import LocalServices
from rest_consumer.state.store import JobStore

LOOPBACK = "127.0.0.0/8"
"""The benchmark's endpoints listen on loopback, which only a network entry allows."""

RESULTS = REPO / "bench" / "results"
PARTITIONS = 4
POOL = os.environ.get("BENCH_POOL", "prefork")
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "4")
"""The worker setup, the same for rest-consumer's workers and the Celery ceiling."""
QUEUE = "rest_consumer"
"""The Celery queue the default job's tasks go to (a Redis list of that name)."""
SLOW_SECONDS = 0.1
SMALL_SECONDS = 0.05
SMALL_CAPACITY = 8
WARM_UP = 200
"""Messages each run sends before it measures."""
"""How long the slow endpoint takes to answer each request."""
STEADY_WARM_UP_SECONDS = 3.0
"""How long the steady-load scenario runs at its rate before it measures."""


@dataclass
class Result:
    name: str
    kind: str  # "ours" or "baseline"
    messages: int
    seconds: float
    throughput: float
    cpu_ms_per_msg: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_msg_by: dict[str, float] = field(default_factory=dict)
    """Each process tree's CPU per message (reader, worker, redis): the capacity model's input."""
    redis_commands_per_msg: float | None = None
    redis_peak_mb: float | None = None


def _commands(client: redis.Redis) -> int:
    """Commands Redis has processed since it started (each command of a pipeline counts)."""
    return int(client.info("stats")["total_commands_processed"])


class RedisPeak(threading.Thread):
    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client, self.peak, self.stopping = client, 0, threading.Event()
        self.commands_at_start = _commands(client)

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))


class Bench:
    def __init__(self, workdir: Path, logs: Path) -> None:
        self.workdir = workdir
        self.logs = logs
        self.services = LocalServices(workdir / "services").start()
        self.env = {**self.services.env(), "LOG_LEVEL": "WARNING", "JOBS_DIR": str(workdir),
                    "PYTHONPATH": str(REPO / "bench"), "DESTINATION_ALLOWLIST": LOOPBACK}
        os.environ.update(self.env)  # for the Celery app this process publishes with
        self.redis = redis.Redis.from_url(self.env["REDIS_URL"])
        self.nginx = Nginx(workdir / "nginx")
        self.nginx.start()
        self.slow = SlowSink(workdir / "slow", SLOW_SECONDS)
        self.slow.start()
        self.small = SlowSink(workdir / "small", SMALL_SECONDS, capacity=SMALL_CAPACITY)
        """An endpoint of unknown capacity: 8 requests at once in 50 ms, 503 beyond."""
        self.small.start()
        self.results: list[Result] = []
        self.runs = 0
        self.sampler: hotspots.Sampler | None = None
        """Samples a process of ``ours`` while it is measured (``--profile``)."""

    def close(self) -> None:
        self.small.stop()
        self.slow.stop()
        self.nginx.stop()
        self.services.stop()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _await_sink(self, n: int, timeout: float) -> None:
        wait_until(lambda: self.nginx.count() >= n, timeout, f"{n} requests at nginx")

    def _finish(self, name: str, kind: str, n: int, began: float, watch: ProcessWatch | None,
                peak: RedisPeak | None, sink: SinkLog | None = None) -> Result:
        entries = (sink or self.nginx).entries()[:n]
        last = max(received for received, _ in entries)
        seconds = last - began
        cpu = watch.stop() if watch else None
        latencies = sorted((received - produced) * 1000 for received, produced in entries
                           if produced is not None)
        result = Result(name, kind, n, round(seconds, 3), round(n / seconds, 1))
        if cpu is not None and watch is not None:
            result.cpu_ms_per_msg = round(cpu * 1000 / n, 3)
            result.cpu_ms_per_msg_by = {k: round(v * 1000 / n, 3) for k, v in watch.used.items()}
            result.peak_rss_mb = {k: round(v / 2**20, 1) for k, v in watch.peak_rss.items()}
        if peak is not None:
            result.redis_commands_per_msg = round(
                (_commands(self.redis) - peak.commands_at_start) / n, 2)
        if latencies:
            result.p50_ms = round(statistics.median(latencies), 1)
            result.p99_ms = round(latencies[int(len(latencies) * 0.99) - 1], 1)
        if peak is not None:
            peak.stopping.set()
            result.redis_peak_mb = round(peak.peak / 2**20, 1)
        self.results.append(result)
        print(f"  {name}: {result.throughput:.0f} msg/s"
              + (f", {result.cpu_ms_per_msg} ms CPU/msg {result.cpu_ms_per_msg_by}"
                 if cpu is not None else "")
              + (f", {result.redis_commands_per_msg} Redis commands/msg"
                 if result.redis_commands_per_msg is not None else "")
              + (f", p50 {result.p50_ms} ms, p99 {result.p99_ms} ms" if latencies else ""),
              flush=True)
        return result

    # --- rest-consumer itself --------------------------------------------------------------

    def ours(self, name: str, n: int, *, events: bool, sink: SinkLog | None = None,
             keys: int = 0, **job: Any) -> Result:
        """rest-consumer as a user runs it (`rest-consumer reader` and `worker`, defaults),
        on a job with the given fields over the defaults, draining a backlog of ``n``."""
        sink = sink or self.nginx
        topic, procs = self._start_ours(sink, events, job)
        try:
            return self._measure_pipeline(name, topic, n, procs, sink, keys)
        finally:
            stop_all(procs)
            self.redis.flushall()

    def ours_counted(self, name: str, n: int, *, events: bool, **job: Any) -> Result:
        """Like ``ours``, counted in records at the job's ``delivered`` counter: for requests
        that carry many records (the sink counts requests). No latency figures."""
        topic, procs = self._start_ours(self.nginx, events, job)
        counter = f"counters:bench-{self.runs}"

        def delivered() -> int:
            return int(self.redis.hget(counter, "delivered") or 0)

        try:
            bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
            produce(bootstrap, topic, 200)
            wait_until(lambda: delivered() >= 200, 120, "the warm-up records")
            watch = ProcessWatch(self._pids(procs))
            watch.start()
            if self.sampler is not None:
                self.sampler.start(procs)
            began = produce(bootstrap, topic, n, start=200)
            wait_until(lambda: delivered() >= n + 200, 600, f"{n} records delivered")
            seconds = time.time() - began
            cpu = watch.stop()
            if self.sampler is not None:
                self.sampler.stop()
            result = Result(name, "ours", n, round(seconds, 3), round(n / seconds, 1),
                            cpu_ms_per_msg=round(cpu * 1000 / n, 3),
                            cpu_ms_per_msg_by={k: round(v * 1000 / n, 3)
                                               for k, v in watch.used.items()})
            self.results.append(result)
            print(f"  {name}: {result.throughput:.0f} records/s, {result.cpu_ms_per_msg} ms CPU "
                  f"per record {result.cpu_ms_per_msg_by}", flush=True)
            return result
        finally:
            stop_all(procs)
            self.redis.flushall()

    def _start_ours(self, sink: Any, events: bool,
                    job: dict[str, Any]) -> tuple[str, list[subprocess.Popen[bytes]]]:
        self.runs += 1
        topic = f"bench.ours.{self.runs}.{int(time.time())}"
        create_topic(self.env["KAFKA_BOOTSTRAP_SERVERS"], topic, PARTITIONS)
        store = JobStore(self.redis, Allowlist.parse((LOOPBACK,)))
        store.upsert(f"bench-{self.runs}", {
            "owner": "bench", "type": "POST", "topic": [topic],
            "datamap": {"id": "$.msg.id", "name": "$.msg.name", "ts": "$.meta.timestamp"},
            "url": sink.url + "/ingest/{id}", "json_body": ["id", "name"],
            "headers": {"X-Produced": "{ts}"}, **job})
        env = {**self.env, "WORKER_SEND_EVENTS": "true" if events else "false"}
        procs = [spawn(rest_consumer("reader"), env, self._log(f"reader{self.runs}"))]
        procs += [spawn(rest_consumer("worker", "--pool", POOL, "-c", CONCURRENCY), env,
                        self._log(f"worker{self.runs}"))]
        return topic, procs

    def _pids(self, procs: list[subprocess.Popen[bytes]]) -> dict[str, int]:
        redis_proc = self.services.redis.proc
        return {"reader": procs[0].pid, "worker": procs[1].pid,
                **({"redis": redis_proc.pid} if redis_proc is not None else {})}

    def _measure_pipeline(self, name: str, topic: str, n: int,
                          procs: list[subprocess.Popen[bytes]], sink: SinkLog,
                          keys: int = 0) -> Result:
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        sink.reset_log()
        produce(bootstrap, topic, 200, keys=keys)
        wait_until(lambda: sink.count() >= 200, 120, "the warm-up messages")
        time.sleep(0.5)
        sink.reset_log()
        watch = ProcessWatch(self._pids(procs))
        watch.start()
        peak = RedisPeak(self.redis)
        peak.start()
        if self.sampler is not None:
            self.sampler.start(procs)
        began = produce(bootstrap, topic, n, start=200, keys=keys)
        wait_until(lambda: sink.count() >= n, 600, f"{n} messages at the sink")
        if self.sampler is not None:
            self.sampler.stop()
        return self._finish(name, "ours", n, began, watch, peak, sink)

    def steady(self, name: str, rate: float, seconds: float) -> Result:
        """Latency, produce to endpoint, at a steady ``rate`` (default job, events on).

        Steady means after STEADY_WARM_UP_SECONDS at the same rate: on this one machine the
        first second of a trickle after a burst is spent warming the Kafka broker's JIT for
        small produce and fetch requests (it took a whole core, and the latency of that
        second is the broker's, not the pipeline's)."""
        topic, procs = self._start_ours(self.nginx, True, {})
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        try:
            self.nginx.reset_log()
            warm = produce_steadily(bootstrap, topic, rate, STEADY_WARM_UP_SECONDS)
            wait_until(lambda: self.nginx.count() >= warm, 120, "the warm-up messages")
            self.nginx.reset_log()
            watch = ProcessWatch(self._pids(procs))
            watch.start()
            began = time.time()
            n = produce_steadily(bootstrap, topic, rate, seconds, start=warm)
            wait_until(lambda: self.nginx.count() >= n, 120, f"{n} messages at the sink")
            return self._finish(f"{name} ({rate:.0f} msg/s offered)", "ours", n, began, watch,
                                None, self.nginx)
        finally:
            stop_all(procs)
            self.redis.flushall()

    def queued_bytes(self, n: int) -> dict[str, float]:
        """Redis memory a queued message takes: a reader alone (no worker) dispatches ``n``
        messages of the default job; the Celery queue's MEMORY USAGE, per message and per
        task (the reader packs what waits, so tasks hold up to ``batch_size`` messages)."""
        self.runs += 1
        topic = f"bench.queued.{self.runs}.{int(time.time())}"
        create_topic(self.env["KAFKA_BOOTSTRAP_SERVERS"], topic, PARTITIONS)
        JobStore(self.redis, Allowlist.parse((LOOPBACK,))).upsert(f"bench-{self.runs}", {
            "owner": "bench", "type": "POST", "topic": [topic], "datamap": {"id": "$.msg.id"},
            "url": self.nginx.url + "/ingest/{id}", "json_body": ["id"]})
        reader = spawn(rest_consumer("reader"), self.env, self._log(f"reader{self.runs}"))
        try:
            produce(self.env["KAFKA_BOOTSTRAP_SERVERS"], topic, n)
            counter = f"counters:bench-{self.runs}"
            wait_until(lambda: int(self.redis.hget(counter, "dispatched") or 0) >= n, 120,
                       f"{n} messages dispatched")
            tasks = int(self.redis.llen(QUEUE))
            used = int(self.redis.memory_usage(QUEUE, samples=0) or 0)
        finally:
            stop_all([reader])
            self.redis.flushall()
        figures = {"queued_bytes_per_msg": round(used / n), "queued_tasks": tasks,
                   "queued_bytes_per_task": round(used / max(tasks, 1))}
        print(f"  queued: {n} messages in {tasks} tasks take {used} bytes of Redis "
              f"({figures['queued_bytes_per_msg']} per message)", flush=True)
        return figures

    # --- baselines -------------------------------------------------------------------------

    def direct(self, n: int) -> Result:
        topic = f"bench.direct.{int(time.time())}"
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        create_topic(bootstrap, topic, PARTITIONS)
        produce(bootstrap, topic, 200)
        self.nginx.reset_log()
        proc = spawn([sys.executable, str(REPO / "bench" / "direct_loop.py"), bootstrap, topic,
                      self.nginx.url, str(n + 200)], self.env, self._log("direct"))
        try:
            self._await_sink(200, 60)
            self.nginx.reset_log()
            watch = ProcessWatch({"direct": proc.pid})
            watch.start()
            began = produce(bootstrap, topic, n, start=200)
            self._await_sink(n, 300)
            return self._finish("direct loop (urllib3, no Celery)", "baseline", n, began, watch,
                                None)
        finally:
            stop_all([proc])

    def naive(self, n: int, events: bool) -> Result:
        """A naive Celery peer with the same pool, processes and task events as ours."""
        topic = f"bench.naive.{int(time.time())}"
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        create_topic(bootstrap, topic, PARTITIONS)
        worker = spawn([sys.executable, "-m", "celery", "-A", "naive_app", "worker",
                        "--pool", POOL, "-c", CONCURRENCY, "--loglevel", "WARNING",
                        *(["-E"] if events else [])], self.env, self._log("naive-worker"))
        loop = spawn([sys.executable, str(REPO / "bench" / "naive_loop.py"), bootstrap, topic,
                      self.nginx.url, str(n + 200)], self.env, self._log("naive-loop"))
        try:
            return self._naive_measure(topic, n, loop, worker)
        finally:
            stop_all([loop, worker])
            self.redis.flushall()

    def _naive_measure(self, topic: str, n: int, loop: Any, worker: Any) -> Result:
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        self.nginx.reset_log()
        produce(bootstrap, topic, 200)
        self._await_sink(200, 60)
        time.sleep(0.5)
        self.nginx.reset_log()
        watch = ProcessWatch({"loop": loop.pid, "worker": worker.pid})
        watch.start()
        began = produce(bootstrap, topic, n, start=200)
        self._await_sink(n, 300)
        result = self._finish(f"naive Celery (requests, {POOL} -c {CONCURRENCY}, events)",
                              "baseline", n, began, watch, None)
        result.p50_ms = result.p99_ms = None
        return result

    def ceiling(self, n: int, events: bool) -> Result:
        env = {**self.env, "WORKER_SEND_EVENTS": "true" if events else "false"}
        worker = spawn([sys.executable, "-m", "celery", "-A", "ceiling_app", "worker",
                        "--pool", POOL, "-c", CONCURRENCY, "--loglevel", "WARNING",
                        "--without-gossip", "--without-mingle", "-Q", "ceiling"], env,
                       self._log("ceiling"))
        from ceiling_app import app

        args = ("job", "hash", [{"t": "t", "p": 0, "o": 0, "v": "e30="}])
        try:
            for _ in range(100):
                app.send_task("ceiling.noop", args, queue="ceiling")
            wait_until(lambda: self._drained("ceiling"), 60, "the warm-up tasks")
            watch = ProcessWatch({"worker": worker.pid})
            watch.start()
            began = time.time()
            for _ in range(n):
                app.send_task("ceiling.noop", args, queue="ceiling")
            wait_until(lambda: self._drained("ceiling"), 300, "the no-op tasks")
            seconds = time.time() - began
            cpu = watch.stop()
            name = "Celery ceiling (no-op tasks)" + (" events" if events else "")
            result = Result(name, "baseline", n, round(seconds, 3), round(n / seconds, 1),
                            round(cpu * 1000 / n, 3),
                            peak_rss_mb={k: round(v / 2**20, 1) for k, v in
                                         watch.peak_rss.items()})
            self.results.append(result)
            print(f"  {name}: {result.throughput:.0f} tasks/s", flush=True)
            return result
        finally:
            stop_all([worker])
            self.redis.flushall()

    def _drained(self, queue: str) -> bool:
        return self.redis.llen(queue) == 0 and self.redis.hlen("unacked") == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 5 minutes)")
    parser.add_argument("--publish", action="store_true",
                        help="copy the results to docs/results/bench/ and docs/performance.md")
    parser.add_argument("--console", action="store_true",
                        help="only the console with 500 jobs (about a minute)")
    parser.add_argument("--pairs", type=int, metavar="N",
                        help="only per_message_vs_ceiling: N alternating pairs (the ceiling, "
                             "then ours) and their median (about a minute a pair)")
    parser.add_argument("--capacity", action="store_true",
                        help="only unknown_capacity: the default job and a job told "
                             "concurrency 8 against an endpoint serving 8 at once")
    parser.add_argument("--batched", type=int, metavar="N",
                        help="only batched_request_vs_single, over N records each")
    parser.add_argument("--signing", type=int, metavar="N",
                        help="only the default job against the same job signing every request "
                             "(standard-webhooks): N alternating pairs, CPU per message of each")
    parser.add_argument("--profile", metavar="PROCESS:SCENARIO",
                        help="only profile one process in one scenario, e.g. worker:fast "
                             "(bench/hotspots.py)")
    args = parser.parse_args()
    if args.console:
        console.main()
        return
    if args.pairs:
        _alone("rc-pairs-", lambda bench: per_message_pairs(bench, args.pairs))
        return
    if args.capacity:
        figures = _alone("rc-capacity-", lambda bench: unknown_capacity(bench, 3000))
        print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
        return
    if args.signing:
        _alone("rc-signing-", lambda bench: signing_pairs(bench, args.signing))
        return
    if args.batched:
        _alone("rc-batched-", lambda bench: batched_vs_single(bench, args.batched))
        return
    if args.profile:
        _alone("rc-profile-", lambda bench: hotspots.run(bench, args.profile,
                                                          RESULTS / "raw" / "profile.txt"))
        return
    scale = 1 if args.quick else 3
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / "raw"  # process logs of the last run, kept for a look when one fails
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    with tempfile.TemporaryDirectory(prefix="rc-bench-") as tmp:
        bench = Bench(Path(tmp), raw)
        try:
            figures = run_scenarios(bench, scale)
        finally:
            bench.close()
    write_reports(bench.results, figures)
    if args.publish:
        publish.publish(RESULTS, REPO / "docs", [asdict(r) for r in bench.results], figures,
                        args.quick)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))


def _alone(prefix: str, scenario: Callable[[Bench], Any]) -> Any:
    """One scenario on a bench of its own, outside the published run (nothing is written)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        bench = Bench(Path(tmp), Path(tmp))
        try:
            return scenario(bench)
        finally:
            bench.close()


def per_message_pairs(bench: Bench, pairs: int, tasks: int = 4000) -> list[float]:
    """``per_message_vs_ceiling`` again and again, the ceiling then ours each time: on a
    shared machine one pair moves by ±10 %, so the median of several says more than one."""
    ratios = []
    for pair in range(1, pairs + 1):
        ceiling = bench.ceiling(tasks, events=False)
        ours = bench.ours("batch_size 1, fast sink", tasks, events=False, batch_size=1)
        ratios.append(round(ours.throughput / ceiling.throughput, 2))
        print(f"  pair {pair}: per_message_vs_ceiling={ratios[-1]}", flush=True)
    print(f"PAIRS per_message_vs_ceiling median={statistics.median(ratios)} all={ratios}")
    return ratios


def batched_vs_single(bench: Bench, n: int) -> dict[str, float]:
    """The default job on the fast sink with one record per request, then with 100 records
    per request (``request_batch``), the same job otherwise (one URL, no per-record header)."""
    same = {"url": bench.nginx.url + "/ingest/batch", "headers": {}}
    single = bench.ours_counted("one record per request, fast sink, events", n, events=True,
                                **same)
    batched = bench.ours_counted("100 records per request (request_batch), fast sink, events",
                                 n, events=True, request_batch={"max_records": 100}, **same)
    figures = {"batched_request_vs_single": round(batched.throughput / single.throughput, 2),
               "cpu_ms_per_record_single": single.cpu_ms_per_msg,
               "cpu_ms_per_record_batched": batched.cpu_ms_per_msg}
    print("BATCHED " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return figures


SIGNING = {"scheme": "standard-webhooks",
           "secret": "whsec_" + base64.b64encode(b"bench-signing-key-0123456789abcd").decode()}


def unknown_capacity(bench: Bench, messages: int) -> dict[str, float]:
    """An endpoint serving 8 requests at once in 50 ms and answering 503 at once beyond that:
    a job told ``concurrency: 8``, then the default job (32), which must find the 8 itself.
    Refusals are counted over each whole run (its warm-up included) against its requests."""
    sink = bench.small
    before = sink.refused()
    told = bench.ours("concurrency 8 told, 8-at-once endpoint, events", messages, events=True,
                      sink=sink, concurrency=8)
    told_refused, before = sink.refused() - before, sink.refused()
    found = bench.ours("default job, 8-at-once endpoint (capacity unknown), events", messages,
                       events=True, sink=sink)
    refused = sink.refused() - before
    requests = messages + WARM_UP + refused
    print(f"  unknown capacity: told {told.throughput:.0f} msg/s ({told_refused} refused), "
          f"default {found.throughput:.0f} msg/s ({refused} of {requests} requests refused)",
          flush=True)
    return {"unknown_capacity_vs_told": round(found.throughput / told.throughput, 2),
            "unknown_capacity_refused_pct": round(100 * refused / requests, 1)}


def signing_pairs(bench: Bench, pairs: int, messages: int = 10000) -> None:
    """The default job, then the same job signing every request, ``pairs`` times."""
    for pair in range(1, pairs + 1):
        plain = bench.ours("default job, fast sink, events", messages, events=True)
        signed = bench.ours("default job signing (standard-webhooks), fast sink, events",
                            messages, events=True, signing=SIGNING)
        print(f"  pair {pair}: cpu_ms_per_msg default={plain.cpu_ms_per_msg} "
              f"signed={signed.cpu_ms_per_msg}; signed_vs_default="
              f"{signed.throughput / plain.throughput:.2f}", flush=True)


def run_scenarios(bench: Bench, scale: int) -> dict[str, Any]:
    """Every scenario, one configuration each, in one run; the figures of the RESULT line."""
    capacity = bench.nginx.capacity()
    print(f"  nginx capacity (wrk): {capacity:.0f} req/s", flush=True)
    bench.direct(6000 * scale)
    naive = bench.naive(2000 * scale, events=True)
    fast = bench.ours("default job, fast sink, events", 10000 * scale, events=True)
    ceiling = bench.ceiling(4000 * scale, events=False)
    per_message = bench.ours("batch_size 1, fast sink", 4000 * scale, events=False,
                             batch_size=1)
    signed = bench.ours("default job signing (standard-webhooks), fast sink, events",
                        10000 * scale, events=True, signing=SIGNING)
    slow = bench.ours("default job, 100 ms endpoint, events", 1500 * scale, events=True,
                      sink=bench.slow)
    slow256 = bench.ours("concurrency 256, 100 ms endpoint, events", 5000 * scale,
                         events=True, sink=bench.slow, concurrency=256)
    half = bench.steady("default job at half of capacity, events", fast.throughput / 2,
                        10 * scale)
    by_key = bench.ours("ordering key, 1,000 keys, fast sink, events", 10000 * scale,
                        events=True, keys=1000, ordering="key")
    slow_by_key = bench.ours("ordering key, 1,000 keys, 100 ms endpoint, events",
                             1500 * scale, events=True, sink=bench.slow, keys=1000,
                             ordering="key")
    capacity = unknown_capacity(bench, 3000)
    batched = batched_vs_single(bench, 10000 * scale)
    queued = bench.queued_bytes(2000 * scale)
    bench.redis.flushall()  # the console's 500 jobs, on their own
    console_figures = console.run(bench.env, bench.workdir)
    return {
        "fast_default_vs_naive": round(fast.throughput / naive.throughput, 2),
        "per_message_vs_ceiling": round(per_message.throughput / ceiling.throughput, 2),
        "slow_default_msgs": round(slow.throughput),
        "slow_c256_msgs": round(slow256.throughput),
        "p99_ms_half_load": half.p99_ms,
        "ordering_key_vs_none": round(by_key.throughput / fast.throughput, 2),
        "slow_ordering_key_msgs": round(slow_by_key.throughput),
        "cpu_ms_per_msg": fast.cpu_ms_per_msg,
        **capacity,
        **batched,
        "cpu_ms_per_msg_signed": signed.cpu_ms_per_msg,
        "signed_vs_default": round(signed.throughput / fast.throughput, 2),
        "worker_rss_mb": fast.peak_rss_mb.get("worker"),
        # the capacity model's inputs (README, "Capacity"): the default job on the fast sink
        **{f"cpu_ms_per_msg_{k}": v for k, v in fast.cpu_ms_per_msg_by.items()},
        "redis_commands_per_msg": fast.redis_commands_per_msg,
        **queued,
        **console_figures,
    }


def write_reports(results: list[Result], figures: dict[str, Any]) -> None:
    lines = [f"# Benchmark run of {datetime.date.today().isoformat()}", "",
             "| configuration | messages | msg/s | CPU ms/msg | p50 ms | p99 ms | peak RSS MB | "
             "Redis peak MB |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        rss = ", ".join(f"{k} {v}" for k, v in r.peak_rss_mb.items())
        lines.append(f"| {r.name} | {r.messages} | {r.throughput:.0f} | {_n(r.cpu_ms_per_msg)} | "
                     f"{_n(r.p50_ms)} | {_n(r.p99_ms)} | {rss} | {_n(r.redis_peak_mb)} |")
    lines += [""] + [f"- {k} = {v}" for k, v in figures.items()]
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps(
        {"results": [asdict(r) for r in results], "figures": figures}, indent=2))
    chart(results)


def _n(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def chart(results: list[Result]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib missing: no chart)")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r.name for r in results]
    colors = ["#4c72b0" if r.kind == "ours" else "#999999" for r in results]
    ax.barh(names, [r.throughput for r in results], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("messages per second, end to end (Kafka -> HTTP 200)")
    ax.set_title("rest-consumer throughput on this 2-core machine (grey: baselines)")
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=110)


if __name__ == "__main__":
    main()
