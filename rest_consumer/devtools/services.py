"""Local Redis and Apache Kafka (KRaft, single node) on free loopback ports.

Used by ``rest-consumer services``/``dev`` and by the test suite's fixtures. Redis is Debian's
``redis-server``; Kafka's broker jars are resolved from Maven Central by ``kafka/pom.xml`` and
cached under ``~/.cache/rest-consumer``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import redis

from rest_consumer.core.errors import ServiceError
from rest_consumer.core.processes import die_with_parent

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rest-consumer"
REDIS_START_TIMEOUT = 10.0
KAFKA_START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, and that this process has
    not handed out before: the kernel may offer a just-closed port again, and two services
    started together then fought for it (a Sentinel group once got one port twice)."""
    with _handed_out_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                if len(_handed_out) >= 10_000:  # a long-lived process: start afresh
                    _handed_out.clear()
                _handed_out.add(port)
                return port


def start_process(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def redis_binary() -> str:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise ServiceError("redis-server not found: install Debian's redis-server package")
    return binary


class _LocalProcess:
    """A server this project started: stopped politely, or SIGKILLed for fault runs (an
    unclean stop: the next start recovers its data)."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RedisServer(_LocalProcess):
    """A ``redis-server`` with AOF persistence in a private directory."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, appendonly: bool = True, extra: tuple[str, ...] = ()) -> None:
        """Start it; ``extra`` are more redis-server options (``--replicaof``, …)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
            "--save", "", "--maxmemory-policy", "noeviction", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", "", *extra,
        ]
        self.proc = start_process(argv, self.workdir / "redis.log")
        self._wait_ready()

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(
                    f"redis-server exited with {self.proc.returncode}:\n"
                    + _tail(self.workdir / "redis.log")
                )
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise ServiceError(f"redis-server not ready within {REDIS_START_TIMEOUT:.0f}s")



def kafka_jars() -> Path:
    """The broker's jars, resolved once from Maven Central and cached by the pom's content."""
    override = os.environ.get("REST_CONSUMER_KAFKA_JARS")
    if override:
        return Path(override)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    target = CACHE_DIR / f"kafka-jars-{digest}"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("mvn not found: Maven is needed once to fetch the Kafka broker jars")
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("resolving the Kafka broker jars from Maven Central into %s", target)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise ServiceError(f"mvn could not fetch the Kafka jars:\n{result.stdout}{result.stderr}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


class KafkaBroker(_LocalProcess):
    """A combined broker+controller in KRaft mode, on loopback: a single node by default, or
    one node of a cluster (``node_id``, ``voters``, a shared ``cluster_id``; ``kafka_cluster``).
    """

    def __init__(self, workdir: Path, port: int | None = None, partitions: int = 1,
                 node_id: int = 1, voters: str | None = None, cluster_id: str | None = None,
                 replication: int = 1, controller_port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.partitions = partitions
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.replication = replication
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_config(self) -> dict[str, str]:
        """What a librdkafka client needs to talk to this broker."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def _listener_lines(self) -> list[str]:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def _properties(self) -> str:
        quorum = (f"controller.quorum.voters={self.voters}" if self.voters else
                  f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}")
        min_isr = 2 if self.replication >= 3 else 1
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            quorum,
            *self._listener_lines(),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.workdir / 'data'}",
            f"num.partitions={self.partitions}",
            "auto.create.topics.enable=true",
            f"default.replication.factor={self.replication}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={self.replication}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={self.replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "",
        ])

    def _java(self, jars: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found: the Kafka broker needs Java 17")
        return [
            java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", f"{jars}/*", *args,
        ]

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting (a cluster's nodes wait for each other)."""
        jars = kafka_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = self.workdir / "server.properties"
        props.write_text(self._properties())
        log_file = self.workdir / "kafka.log"
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=log_file))
        if not (self.workdir / "data" / "meta.properties").exists():
            self._format(jars, props)
        self.proc = start_process(self._java(jars, "kafka.Kafka", str(props)),
                                  self.workdir / "stdout.log")

    def _format(self, jars: Path, props: Path) -> None:
        cluster_id = self.cluster_id or new_cluster_id()
        quorum = [] if self.voters else ["--standalone"]
        argv = self._java(jars, "kafka.tools.StorageTool", "format", *quorum,
                          "-t", cluster_id, "-c", str(props), *self._format_extra())
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"Kafka storage format failed:\n{result.stdout}{result.stderr}")

    def _format_extra(self) -> list[str]:
        return []

    def wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**self.client_config(), "log_level": 0})
        deadline = time.monotonic() + KAFKA_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(
                    f"Kafka exited with {self.proc.returncode}:\n"
                    + _tail(self.workdir / "stdout.log") + _tail(self.workdir / "kafka.log")
                )
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except Exception:  # noqa: BLE001 - KafkaException until the broker answers
                time.sleep(0.2)
        raise ServiceError(f"Kafka not ready within {KAFKA_START_TIMEOUT:.0f}s:\n"
                           + _tail(self.workdir / "kafka.log"))



def new_cluster_id() -> str:
    cluster_id = "-"
    while cluster_id.startswith("-"):  # the tool would read a leading "-" as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
    return cluster_id


class LocalServices:
    """Redis and Kafka together, in one temporary directory removed on stop."""

    def __init__(self, workdir: Path | None = None, kafka_partitions: int = 1) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rest-consumer-"))
        self.redis = RedisServer(self.workdir / "redis")
        self.kafka = KafkaBroker(self.workdir / "kafka", partitions=kafka_partitions)

    def start(self) -> LocalServices:
        try:
            self.redis.start()
            self.kafka.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.kafka.stop()
        self.redis.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url,
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers}

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
