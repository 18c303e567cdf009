"""Pieces the benchmark is made of: nginx as the sink, process measurement, producing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rest_consumer.core.processes import die_with_parent
from rest_consumer.devtools.services import free_port

REPO = Path(__file__).resolve().parent.parent

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format bench '$msec $http_x_produced $request_uri';
  access_log {dir}/access.log bench;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 '{{}}'; }}
  }}
}}
"""


class SinkLog:
    """A sink's log of answered requests (``<unix time> <X-Produced ms> <path>`` a line):
    what was received since the last reset, counted by distinct path (= message id)."""

    log: Path

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def reset_log(self) -> None:
        """Count from here on: remember where the log ends now."""
        self._offset = self.log.stat().st_size if self.log.exists() else 0

    def _new_lines(self) -> list[bytes]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        return data[:data.rfind(b"\n") + 1].splitlines()

    def count(self) -> int:
        """Distinct requests (by path: every message has its own id in the path)."""
        return len({line.rpartition(b" ")[2] for line in self._new_lines()})

    def entries(self) -> list[tuple[float, float | None]]:
        """(received, produced) Unix times of the first answer to each distinct path."""
        rows, seen = [], set()
        for line in self._new_lines():
            received, produced, path = line.decode().split(" ", 2)
            if path in seen:
                continue
            seen.add(path)
            rows.append((float(received), float(produced) / 1000 if produced not in ("", "-")
                         else None))
        return rows


class Nginx(SinkLog):
    """nginx answering 200 to everything at once: the fast sink."""

    @property
    def log(self) -> Path:  # type: ignore[override]
        return self.dir / "access.log"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while not self.log.exists() or not _port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start: " + (self.dir / "error.log").read_text())
            time.sleep(0.05)

    def capacity(self) -> float:
        """Requests per second that wrk gets from this nginx (1 thread, 16 connections, 3 s)."""
        wrk = shutil.which("wrk")
        if wrk is None:
            return float("nan")
        out = subprocess.run([wrk, "-t1", "-c16", "-d3s", self.url + "/"], capture_output=True,
                             text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        return float("nan")


class SlowSink(SinkLog):
    """bench/slow_sink.py: every answer after ``delay`` seconds, many requests waiting at once."""

    def __init__(self, workdir: Path, delay: float, capacity: int = 0) -> None:
        super().__init__(workdir)
        self.delay = delay
        self.capacity = capacity
        """Requests served at once, 503 beyond (0: no bound)."""

    @property
    def log(self) -> Path:  # type: ignore[override]
        return self.dir / "slow.log"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "slow_sink.py"), str(self.port),
             str(self.delay), str(self.log), str(self.capacity)], preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("the slow sink did not start")
            time.sleep(0.05)


    def refused(self) -> int:
        """503s answered so far (with a capacity)."""
        path = Path(str(self.log) + ".refused")
        return len(path.read_text().splitlines()) if path.exists() else 0


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ProcessWatch:
    """CPU seconds and peak RSS of some process trees, sampled in the background."""

    pids: dict[str, int]
    peak_rss: dict[str, int] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each tree between ``start`` and ``stop``."""
    _start_cpu: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _trees(self) -> dict[str, list[psutil.Process]]:
        trees = {}
        for name, pid in self.pids.items():
            try:
                root = psutil.Process(pid)
                trees[name] = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                trees[name] = []
        return trees

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each tree."""
        totals = {}
        for name, procs in self._trees().items():
            total = 0.0
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            totals[name] = total
        return totals

    def start(self) -> None:
        self._start_cpu = self.cpu()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for name, procs in self._trees().items():
                rss = 0
                for proc in procs:
                    try:
                        rss += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)

    def stop(self) -> float:
        """CPU seconds used since start, all trees together (each in ``used``)."""
        self._stop.set()
        now = self.cpu()
        self.used = {name: now[name] - self._start_cpu.get(name, 0.0) for name in now}
        return sum(self.used.values())


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, count: int, start: int = 0, keys: int = 0) -> float:
    """Produce ``count`` small JSON messages as fast as possible (keyed ``k<i % keys>`` when
    ``keys``); returns when it began."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 1000000})
    began = time.time()
    for i in range(start, start + count):
        value = json.dumps({"id": f"m{i}", "name": f"name {i}", "n": i}).encode()
        key = f"k{i % keys}".encode() if keys else None
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    return began


def produce_steadily(bootstrap: str, topic: str, rate: float, seconds: float,
                     start: int = 0) -> int:
    """Produce at ``rate`` messages per second for ``seconds``, as a live source would, with
    the client's default batching (librdkafka's ``linger.ms`` is 5: part of the latency
    measured); returns how many were produced."""
    producer = Producer({"bootstrap.servers": bootstrap})
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            i = start + sent
            producer.produce(topic, json.dumps({"id": f"m{i}", "name": f"name {i}",
                                                "n": i}).encode())
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, (sent / rate) - (time.monotonic() - began)))
    producer.flush(60)
    return sent


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO,
                                preexec_fn=die_with_parent)


def rest_consumer(*args: str) -> list[str]:
    return [sys.executable, "-m", "rest_consumer", *args]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
