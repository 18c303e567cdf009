"""The production topology on one machine, with the shipped settings: Redis Sentinel (a
primary, a replica, three sentinels), a 3-broker KRaft cluster (replication factor 3,
``min.insync.replicas=2``), two readers and three workers, each its own process group.

While messages stream in at a steady rate, the Redis primary is SIGKILLed, then one Kafka
broker, then a reader. A failover's figure is how long, from the kill, until a message
produced after it is delivered on every partition (the slowest partition's recovery). Prints
``RESULT lost=… duplicates=… redis_failover_s=… kafka_failover_s=… reader_failover_s=…``
and writes ``topology/results/``. Goal: lost = 0, each failover absorbed within 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from endpoint import RecordingEndpoint  # noqa: E402
from pipeline import Pipeline  # noqa: E402

from helpers import spawn  # noqa: E402
from rest_consumer.core import redisconn  # noqa: E402
from rest_consumer.core.destinations import Allowlist  # noqa: E402
from rest_consumer.devtools.kafka_cluster import KafkaCluster  # noqa: E402
from rest_consumer.devtools.sentinel_group import SentinelGroup  # noqa: E402
from rest_consumer.state.store import JobStore  # noqa: E402

RESULTS = REPO / "topology" / "results"
TOPIC = "topology.people"
PARTITIONS = 4
GOAL_S = 30.0


class Topology:
    """The services, the processes and the stream of messages of one run."""

    def __init__(self, workdir: Path, messages: int, seconds: float) -> None:
        self.workdir = workdir
        self.messages, self.seconds = messages, seconds
        self.sentinels = SentinelGroup(workdir / "sentinel").start()
        self.kafka = KafkaCluster(workdir / "kafka", partitions=PARTITIONS).start()
        self.endpoint = RecordingEndpoint().start()
        self.pipe = Pipeline(self.sentinels.url, self.kafka.bootstrap_servers, workdir)
        for name in ("VISIBILITY_TIMEOUT", "REDISPATCH_AFTER", "RECONCILE_INTERVAL"):
            self.pipe.env.pop(name)  # the shipped defaults: the figures are a user's
        self.pipe.env["LOG_LEVEL"] = "WARNING"
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.produced_at: dict[str, tuple[float, int]] = {}
        """Message id -> when it was produced (monotonic) and to which partition."""

    def start_job(self) -> None:
        self.pipe.create_topic(TOPIC, partitions=PARTITIONS)
        job = {"id": "people", "owner": "topology", "type": "POST", "topic": [TOPIC],
               "datamap": {"id": "$.msg.id"}, "url": self.endpoint.url + "/p/{id}",
               "json_body": ["id"], "max_retries": 1000}
        client = redisconn.connect(self.sentinels.url, socket_timeout=5)
        JobStore(client, Allowlist.parse(("127.0.0.0/8",))).upsert("people", job)
        for name, args in (("reader1", ["reader"]), ("reader2", ["reader"]),
                           ("worker1", ["worker"]), ("worker2", ["worker"]),
                           ("worker3", ["worker"])):
            with open(self.workdir / f"{name}.log", "w") as log:
                self.procs[name] = spawn(*args, env=self.pipe.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stream(self) -> None:
        """Produce the messages at a steady rate, remembering when each was produced."""
        pause = self.seconds / self.messages
        for i in range(self.messages):
            message_id, partition = f"m{i}", i % PARTITIONS
            self.produced_at[message_id] = (time.monotonic(), partition)
            self.pipe.produce(TOPIC, [json.dumps({"id": message_id}).encode()],
                              partition=partition)
            time.sleep(pause)

    def delivered(self) -> dict[str, float]:
        """Each delivered id and when it first arrived (monotonic, like ``produced_at``)."""
        offset = time.monotonic() - time.time()
        first: dict[str, float] = {}
        for request in list(self.endpoint.received):
            message_id = request.path.rsplit("/", 1)[1]
            first.setdefault(message_id, request.at + offset)
        return first

    def recovery(self, struck: float, timeout: float = 180) -> float:
        """Seconds from ``struck`` until, on every partition, a message produced after it is
        delivered: the slowest partition's recovery."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first: dict[int, float] = {}
            for message_id, at in self.delivered().items():
                produced, partition = self.produced_at.get(message_id, (0.0, -1))
                if produced > struck:
                    first[partition] = min(at, first.get(partition, at))
            if len(first) == PARTITIONS:
                return round(max(first.values()) - struck, 1)
            time.sleep(0.2)
        return float("inf")

    def kill_process_group(self, name: str) -> None:
        os.killpg(self.procs.pop(name).pid, signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        self.endpoint.stop()
        self.kafka.stop()
        self.sentinels.stop()


def run(topology: Topology) -> dict[str, Any]:
    topology.start_job()
    streaming = threading.Thread(target=topology.stream, daemon=True)
    streaming.start()
    figures: dict[str, Any] = {}
    wait = topology.seconds / 4
    for fault, strike in (("redis_failover_s", _kill_redis_primary),
                          ("kafka_failover_s", _kill_a_broker),
                          ("reader_failover_s", _kill_a_reader)):
        time.sleep(wait)
        struck = time.monotonic()
        strike(topology)
        print(f"  {fault[:-2].replace('_', ' ')}: struck", flush=True)
        figures[fault] = topology.recovery(struck)
        print(f"  {fault} = {figures[fault]}", flush=True)
    streaming.join()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(topology.delivered()) < topology.messages:
        time.sleep(1)
    delivered = topology.delivered()
    received = sum(1 for r in topology.endpoint.received if r.path.startswith("/p/"))
    return {"lost": topology.messages - len(delivered),
            "duplicates": received - len(delivered), **figures}


def _kill_redis_primary(topology: Topology) -> None:
    topology.sentinels.kill_primary()


def _kill_a_broker(topology: Topology) -> None:
    topology.kafka.nodes[0].kill()


def _kill_a_reader(topology: Topology) -> None:
    topology.kill_process_group("reader1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 messages over 60 s")
    parser.add_argument("--publish", action="store_true",
                        help="copy result.json to docs/results/topology/")
    args = parser.parse_args()
    messages, seconds = (2000, 60.0) if args.quick else (10000, 160.0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rc-topology-") as tmp:
        topology = Topology(Path(tmp), messages, seconds)
        try:
            figures = run(topology)
        finally:
            logs = RESULTS / "logs"
            logs.mkdir(exist_ok=True)
            for log in Path(tmp).glob("*.log"):
                (logs / log.name).write_text(log.read_text(errors="replace"))
            topology.stop()
    ok = figures["lost"] == 0 and all(
        figures[k] <= GOAL_S for k in ("redis_failover_s", "kafka_failover_s"))
    (RESULTS / "result.json").write_text(json.dumps(
        {"messages": messages, "seconds": seconds, **figures, "goal_met": ok}, indent=2))
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
    if args.publish:
        target = REPO / "docs" / "results" / "topology"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(RESULTS / "result.json", target / "result.json")
        print(f"  published to {target}")


if __name__ == "__main__":
    main()
