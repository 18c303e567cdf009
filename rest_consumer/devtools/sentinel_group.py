"""A local Redis Sentinel group on loopback (a primary, a replica, three sentinels), from
Debian's ``redis-server``: for the failover tests and ``topology/run``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from rest_consumer.core.errors import ServiceError
from rest_consumer.devtools.services import (
    RedisServer,
    free_port,
    redis_binary,
    start_process,
    stop_process,
)

MASTER = "mymaster"
QUORUM = 2
DOWN_AFTER_MS = 1000
"""How long the primary may be silent before the sentinels call it down (the failover's
first second); production groups use 5-30 s, tests want it quick."""
FAILOVER_TIMEOUT_MS = 5000
READY_TIMEOUT = 30.0


class SentinelGroup:
    """Primary, replica and three sentinels watching them as ``MASTER``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary = RedisServer(workdir / "primary")
        self.replica = RedisServer(workdir / "replica")
        self.ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The group as ``REDIS_URL`` / ``CELERY_BROKER_URL`` take it (``redisconn``)."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.ports)

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica.start(extra=("--replicaof", "127.0.0.1", str(self.primary.port)))
        for n, port in enumerate(self.ports):
            folder = self.workdir / f"sentinel{n}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # sentinels rewrite their file: one each
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {folder}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} {QUORUM}",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1", ""]))
            self._sentinels.append(start_process([redis_binary(), str(conf), "--sentinel"],
                                                 folder / "sentinel.log"))
        self._wait_ready()
        return self

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers sees it."""
        for port in self.ports:
            try:
                client = redis.Redis(port=port, socket_timeout=1)
                found = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if isinstance(found, tuple):
                return int(found[1])
        return None

    def kill_primary(self) -> None:
        """SIGKILL the current primary (whichever server it is now)."""
        current = self.master_port()
        for server in (self.primary, self.replica):
            if server.port == current:
                server.kill()

    def wait_for_failover(self, from_port: int, timeout: float = 60) -> float:
        """Seconds until the sentinels name another primary than ``from_port``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            port = self.master_port()
            if port is not None and port != from_port:
                return time.monotonic() - started
            time.sleep(0.1)
        raise ServiceError(f"no failover within {timeout:.0f}s")

    def _wait_ready(self) -> None:
        """The replica is in sync, and every sentinel sees it and the other two sentinels."""
        deadline = time.monotonic() + READY_TIMEOUT
        replica = redis.Redis(port=self.replica.port, socket_timeout=1)
        while time.monotonic() < deadline:
            linked = replica.info("replication").get("master_link_status") == "up"
            if linked and all(self._sees_everyone(port) for port in self.ports):
                return
            time.sleep(0.2)
        raise ServiceError(f"the Sentinel group was not ready within {READY_TIMEOUT:.0f}s")

    @staticmethod
    def _sees_everyone(port: int) -> bool:
        try:
            state = redis.Redis(port=port, socket_timeout=1).sentinel_master(MASTER)
        except redis.RedisError:
            return False
        return isinstance(state, dict) and (state.get("num-slaves", 0) >= 1
                                            and state.get("num-other-sentinels", 0) >= 2)

    def stop(self) -> None:
        for proc in self._sentinels:
            stop_process(proc)
        self.replica.stop()
        self.primary.stop()
