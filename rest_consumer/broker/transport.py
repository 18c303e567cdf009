"""Kombu's Redis transports, made cheaper per task for a worker's main process.

Kombu's Redis channel builds a new ``redis.Redis`` object for every ack, every reserved
message and every publish (``Channel.conn_or_acquire``); with redis-py 8 that costs about
125 µs of CPU each (it copies the table of response callbacks), which measured 8 % of a
worker's CPU with one message per task (``bench/``). A client object is only a view of the
channel's connection pool and is thread-safe, so one per channel serves them all.

The record of a reserved task and its ack are each a MULTI/EXEC pipeline of two commands;
redis-py's ``Pipeline`` machinery around them cost a worker's main process (the one process
that feeds every pool process) more CPU than Redis spent running them, so they go through
``RoundTrip``: the same commands, keys and values, packed and read leanly. A ``deliver``
task that removed its own record (``acks``) is acked without Redis. A worker files the tags it
holds under its own name in the same transactions (``holders``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from rest_consumer.broker import holders
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.redisconn import SENTINEL_SCHEME

Rendered = list[tuple[str, dict[str, Any]]]
"""Messages kombu would have pushed: (the Redis list's key, the message)."""


class _SharedClient:
    """Mixin for a kombu Redis channel: ``conn_or_acquire`` yields one shared client, and
    ``rendering`` collects what is published instead of sending it."""

    _rendering = threading.local()

    @cached_property
    def _shared_client(self) -> Any:
        return self._create_client()  # type: ignore[attr-defined]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client

    @contextmanager
    def rendering(self) -> Iterator[Rendered]:
        """What this thread publishes inside the block, as kombu would push it (key and
        message): collected, not sent (``publishing`` renders Celery's message this way)."""
        rendered: Rendered = []
        self._rendering.sink = rendered
        try:
            yield rendered
        finally:
            self._rendering.sink = None

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        sink = getattr(self._rendering, "sink", None)
        if sink is None:
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[attr-defined]
        sink.append((self._q_for_pri(queue, priority), message))  # type: ignore[attr-defined]


class QoS(kombu_redis.QoS):
    """Kombu's unacked record and ack, through a transactional ``RoundTrip``, with the tag
    filed under the worker that holds it (``holders``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._settled: set[str] = set()

    def settled(self, delivery_tag: str) -> None:
        """The task removed its own unacked record (``acks``): its ack needs no round trip."""
        self._settled.add(delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        """Kombu's record of a reserved message (its own ``append``: the same keys and
        value), and the holder's file, in one transaction."""
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            record = [message._raw, delivery["exchange"], delivery["routing_key"]]
            pipe.hset(self.unacked_key, delivery_tag, dumps(record))  # type: ignore[no-untyped-call]
            holders.queue_held(pipe, delivery_tag)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """Kombu's removal of the record (an ack, a reject, a restore), and of the tag from
        this worker's file."""
        pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        holders.queue_released(pipe, delivery_tag)
        return pipe

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self._settled:
            self._settled.discard(delivery_tag)
            # kombu's local state only: Redis no longer holds the record
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        else:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    @contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:  # restoring a message: kombu's WATCHed transaction, unchanged
            yield pipe
        elif self.channel.global_keyprefix:  # kombu's prefixing pipeline (not set by us)
            with super().pipe_or_acquire(pipe, client) as kombu_pipe:
                yield kombu_pipe
        else:
            with self.channel.conn_or_acquire(client) as client:
                yield RoundTrip(client, transaction=True, own_connection=True)


class Channel(_SharedClient, kombu_redis.Channel):
    QoS = QoS


class SentinelChannel(_SharedClient, kombu_redis.SentinelChannel):
    QoS = QoS


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
