"""The minimum spacing between one job's requests, across every worker (GCRA in Redis)."""

from __future__ import annotations

from typing import Any

from rest_consumer.broker.roundtrip import LuaScript
from rest_consumer.state import keys

# Reserve the next free slot at least `interval` after the previous one, on Redis's clock so
# every worker shares it. A wait longer than ARGV[2] is not reserved: the caller reschedules.
_RESERVE = LuaScript.read("rest_consumer.worker", "ratelimit_reserve.lua")

MAX_SLEEP_SECONDS = 5.0
"""Longer waits become a retry (waiting in Redis) instead of holding a worker slot."""


class RateLimiter:
    """Reserves send slots for jobs that set ``ratelimit``."""

    def __init__(self, client: Any) -> None:
        self._script = _RESERVE.register(client)

    def reserve(self, job_id: str, interval: float,
                max_wait: float = MAX_SLEEP_SECONDS) -> tuple[float, bool]:
        """(seconds to wait, whether the slot is reserved: not when the wait exceeds
        ``max_wait``, itself at most MAX_SLEEP_SECONDS)."""
        wait, reserved = self._script(keys=[keys.ratelimit(job_id)],
                                      args=[interval, min(max_wait, MAX_SLEEP_SECONDS)])
        return float(wait), bool(reserved)
