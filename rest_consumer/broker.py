"""Kombu's Redis transports, with one Redis client per channel instead of one per operation.

Kombu's Redis channel builds a new ``redis.Redis`` object for every ack, every reserved
message and every publish (``Channel.conn_or_acquire``); with redis-py 8 that costs about
125 µs of CPU each (it copies the table of response callbacks), which measured 8 % of a
worker's CPU with one message per task (``bench/``). A client object is only a view of the
channel's connection pool and is thread-safe, so one per channel serves them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.transport import redis as kombu_redis

from rest_consumer.redisconn import SENTINEL_SCHEME


class _SharedClient:
    """Mixin for a kombu Redis channel: ``conn_or_acquire`` yields one shared client."""

    @cached_property
    def _shared_client(self) -> Any:
        return self._create_client()  # type: ignore[attr-defined]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client


class Channel(_SharedClient, kombu_redis.Channel):
    pass


class SentinelChannel(_SharedClient, kombu_redis.SentinelChannel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str) -> str | None:
    """The transport for Celery's ``broker_transport`` setting; None leaves kombu's choice
    (a scheme this module does not cover)."""
    scheme = broker_url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return f"{__name__}:Transport"
    if scheme == SENTINEL_SCHEME:
        return f"{__name__}:SentinelTransport"
    return None
