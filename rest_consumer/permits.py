"""A job's ``concurrency``: at most that many of its requests in flight across every worker.

A counting semaphore in Redis, as a sorted set of leases scored by expiry (on Redis's clock,
shared by every worker). A task takes up to as many permits as it has requests in one call,
sends on that many lanes, and gives back the permits of lanes that ran dry in the same call
that asks for more (or alone, once nothing waits): one round trip, not one per lane. A
worker that dies holding permits cannot starve the job for long: leases are short
(``LEASE_SECONDS``), renewed by a thread of the living worker, and an expired one is swept
by the next acquire.
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_consumer import keys

LEASE_SECONDS = 10.0
"""How long a permit outlives the last renewal: how long a dead worker's permits block."""
RENEW_EVERY_SECONDS = 3.0

_EXCHANGE = """
for i = 5, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
local n = tonumber(ARGV[2])
if n <= 0 then
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
n = math.min(free, n)
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
        self._exchange = client.register_script(_EXCHANGE)
        self._renew = client.register_script(_RENEW)

    def exchange(self, job_id: str, limit: int, release: list[str], wanted: int,
                 lease: float) -> list[str]:
        """Give back ``release``, then take up to ``wanted`` permits (none when the job is
        at its limit), each valid for ``lease`` seconds unless renewed; one round trip."""
        if wanted <= 0 and not release:
            return []
        return granted(self._exchange(keys=[keys.permits(job_id)],
                                      args=_exchange_args(limit, release, wanted, lease)))

    @staticmethod
    def queue_exchange(pipe: Any, job_id: str, limit: int, release: list[str], wanted: int,
                       lease: float) -> None:
        """``exchange`` queued on a pipeline (``granted`` reads its reply). As ``EVAL``: a
        registered script on a pipeline costs a ``SCRIPT EXISTS`` round trip per execute."""
        pipe.eval(_EXCHANGE, 1, keys.permits(job_id),
                  *_exchange_args(limit, release, wanted, lease))

    @staticmethod
    def queue_release(pipe: Any, job_id: str, tokens: list[str]) -> None:
        if tokens:
            pipe.zrem(keys.permits(job_id), *tokens)

    def renew(self, job_id: str, tokens: list[str], lease: float) -> None:
        """Extend the leases of permits still in use."""
        if tokens:
            self._renew(keys=[keys.permits(job_id)], args=[int(lease * 1000), *tokens])


def granted(reply: Any) -> list[str]:
    """The permits an ``exchange`` reply grants."""
    return [g.decode() if isinstance(g, bytes) else str(g) for g in reply]


def _exchange_args(limit: int, release: list[str], wanted: int,
                   lease: float) -> list[Any]:
    return [limit, wanted, int(lease * 1000), uuid.uuid4().hex, *release]
