"""A job's ``concurrency``: at most that many of its requests in flight across every worker.

A counting semaphore in Redis, as a sorted set of leases scored by expiry (on Redis's clock,
shared by every worker). A task takes up to as many permits as it has requests in one call,
sends on that many lanes, and gives each back when its lane runs dry. A worker that dies holding
permits cannot starve the job for long: leases are short (``LEASE_SECONDS``), renewed by a
thread of the living worker, and an expired one is swept by the next acquire.
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_consumer import keys

LEASE_SECONDS = 10.0
"""How long a permit outlives the last renewal: how long a dead worker's permits block."""
RENEW_EVERY_SECONDS = 3.0

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local n = math.min(free, tonumber(ARGV[2]))
local granted = {}
for i = 1, n do
  local token = ARGV[4] .. ':' .. i
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), token)
  granted[i] = token
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 60000)
return granted
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return #ARGV - 1
"""


class Permits:
    """Acquire, renew and release a job's request permits."""

    def __init__(self, client: Any) -> None:
        self.redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def acquire(self, job_id: str, limit: int, wanted: int, lease: float) -> list[str]:
        """Up to ``wanted`` permits (none when the job is at its limit), each valid for
        ``lease`` seconds unless renewed."""
        if wanted <= 0:
            return []
        granted = self._acquire(keys=[keys.permits(job_id)],
                                args=[limit, wanted, int(lease * 1000), uuid.uuid4().hex])
        return [g.decode() if isinstance(g, bytes) else str(g) for g in granted]

    def renew(self, job_id: str, tokens: list[str], lease: float) -> None:
        """Extend the leases of permits still in use."""
        if tokens:
            self._renew(keys=[keys.permits(job_id)], args=[int(lease * 1000), *tokens])

    def release(self, job_id: str, token: str) -> None:
        self.redis.zrem(keys.permits(job_id), token)
