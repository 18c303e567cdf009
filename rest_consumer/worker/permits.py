"""A job's ``concurrency``: at most that many of its requests in flight across every worker.

The same script keeps the endpoint's health (``health``): it grants within the job's adaptive
limit, grants nothing while a ``Retry-After`` pause or an open breaker lasts (and says how long
to wait), and takes the task's report of what its requests met, all in one round trip.

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

from rest_consumer.broker.roundtrip import LuaScript
from rest_consumer.state import health, keys
from rest_consumer.state.health import Report, Verdict

LEASE_SECONDS = 10.0
"""How long a permit outlives the last renewal: how long a dead worker's permits block."""
RENEW_EVERY_SECONDS = 3.0

_TRADE = LuaScript.read("rest_consumer.worker", "permits_trade.lua")

_RENEW = LuaScript.read("rest_consumer.worker", "permits_renew.lua")


class Permits:
    """Acquire, renew and release a job's request permits."""

    def __init__(self, client: Any) -> None:
        self.redis = client
        self._trade = _TRADE.register(client)
        self._renew = _RENEW.register(client)

    def trade(self, job: Any, release: list[str], wanted: int, lease: float,
                 report: Report | None = None) -> Verdict:
        """Give back ``release`` and report what requests met, then take up to ``wanted``
        permits (none when the job is at its limit, paused or its breaker open), each valid
        for ``lease`` seconds unless renewed; one round trip."""
        return health.parse(self._trade(keys=_keys(job.id),
                                           args=_trade_args(job, release, wanted, lease,
                                                               report)))

    @staticmethod
    def queue_trade(pipe: Any, job: Any, release: list[str], wanted: int, lease: float,
                       report: Report | None = None) -> None:
        """``trade`` queued on a round trip (``health.parse`` reads its reply), by the
        script's SHA1."""
        pipe.script(_TRADE, _keys(job.id), _trade_args(job, release, wanted, lease, report))

    @staticmethod
    def queue_release(pipe: Any, job_id: str, tokens: list[str]) -> None:
        if tokens:
            pipe.zrem(keys.permits(job_id), *tokens)

    def renew(self, job_id: str, tokens: list[str], lease: float) -> None:
        """Extend the leases of permits still in use."""
        if tokens:
            self._renew(keys=[keys.permits(job_id)], args=[int(lease * 1000), *tokens])


def _keys(job_id: str) -> list[str]:
    return [keys.permits(job_id), keys.endpoint_health(job_id), keys.endpoint_history(job_id)]


def _trade_args(job: Any, release: list[str], wanted: int, lease: float,
                   report: Report | None) -> list[Any]:
    return [job.concurrency, wanted, int(lease * 1000), uuid.uuid4().hex,
            *health.settings_args(job), *(report or Report()).args(), *release]
