"""The minimum spacing between one job's requests, across every worker (GCRA in Redis)."""

from __future__ import annotations

from typing import Any

from rest_consumer.state import keys

# Reserve the next free slot at least `interval` after the previous one, on Redis's clock so
# every worker shares it. A wait longer than ARGV[2] is not reserved: the caller reschedules.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return {tostring(wait), 0} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'PX',
           math.ceil((next_tat - now) * 1000) + 1000)
return {tostring(wait), 1}
"""

MAX_SLEEP_SECONDS = 5.0
"""Longer waits become a retry (waiting in Redis) instead of holding a worker slot."""


class RateLimiter:
    """Reserves send slots for jobs that set ``ratelimit``."""

    def __init__(self, client: Any) -> None:
        self._script = client.register_script(_RESERVE)

    def reserve(self, job_id: str, interval: float,
                max_wait: float = MAX_SLEEP_SECONDS) -> tuple[float, bool]:
        """(seconds to wait, whether the slot is reserved: not when the wait exceeds
        ``max_wait``, itself at most MAX_SLEEP_SECONDS)."""
        wait, reserved = self._script(keys=[keys.ratelimit(job_id)],
                                      args=[interval, min(max_wait, MAX_SLEEP_SECONDS)])
        return float(wait), bool(reserved)
