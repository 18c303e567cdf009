"""A real pipeline for end-to-end tests: reader and worker subprocesses, a producer."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import spawn, stop
from rest_consumer.core import config


class Pipeline:
    """Starts ``rest-consumer reader`` and ``worker`` processes against real services."""

    def __init__(self, redis_url: str, kafka: str, workdir: Path,
                 kafka_env: dict[str, str] | None = None) -> None:
        """``kafka_env``: more ``KAFKA_*`` settings (security), for the processes and for the
        test's own producer and admin client."""
        self.kafka = kafka
        self.workdir = workdir
        (workdir / "jobs").mkdir(exist_ok=True)
        self.env = {
            "REDIS_URL": redis_url, "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "JOBS_DIR": str(workdir / "jobs"), "RECONCILE_INTERVAL": "2",
            "VISIBILITY_TIMEOUT": "8", "REDISPATCH_AFTER": "20",
            "CONSUMER_GROUP_PREFIX": f"t{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "INFO",
            "DESTINATION_ALLOWLIST": "127.0.0.0/8",
        }
        self.env.update(kafka_env or {})
        self.kafka_config = config.from_env(self.env).kafka_client_config()
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._producer = Producer({**self.kafka_config, "linger.ms": 5})

    def start(self, name: str, *args: str) -> subprocess.Popen[str]:
        with open(self.workdir / f"{name}.log", "a") as log:  # the child keeps its own copy
            proc = spawn(*args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_reader(self, name: str = "reader") -> subprocess.Popen[str]:
        return self.start(name, "reader")

    def start_worker(self, name: str = "worker", *args: str) -> subprocess.Popen[str]:
        return self.start(name, "worker", "-c", "4", *args)

    def stop(self, name: str) -> int:
        return stop(self.procs.pop(name))

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        admin = AdminClient(self.kafka_config)
        # replication: the brokers' default (1 on the tests' single broker; 3 on a cluster)
        futures = admin.create_topics([NewTopic(topic, partitions, -1)])
        for future in futures.values():
            future.result(30)

    def produce(self, topic: str, values: list[bytes], partition: int | None = None,
                **kw: Any) -> None:
        for value in values:
            if partition is None:
                self._producer.produce(topic, value, **kw)
            else:
                self._producer.produce(topic, value, partition=partition, **kw)
        assert self._producer.flush(30) == 0
