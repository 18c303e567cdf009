"""Every Redis client of the project, from one URL: ``redis://``, ``rediss://``, ``unix://``,
or Redis Sentinel as kombu spells it, so that ``REDIS_URL`` and ``CELERY_BROKER_URL`` can be
the same string::

    sentinel://:password@sentinel-1:26379/0;sentinel://sentinel-2:26379;sentinel://sentinel-3:26379

with the master's name in ``REDIS_SENTINEL_MASTER`` (default ``mymaster``). The password and
database of the first address are the master's; the client asks the sentinels for the
current master on every new connection, and a connection to a demoted or dead master fails
over to the promoted replica by itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from rest_consumer.core.errors import ConfigError

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def connect(url: str, master: str = "mymaster", **options: Any) -> redis.Redis:
    """A client of the Redis at ``url`` (of the Sentinel group's master for ``sentinel://``);
    ``options`` are redis-py's connection options (timeouts, health checks)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    addresses, password, db = parse_sentinels(url)
    sentinel = Sentinel(addresses, sentinel_kwargs={  # type: ignore[no-untyped-call]
        "socket_timeout": options.get("socket_timeout", 5),
        "socket_connect_timeout": options.get("socket_connect_timeout", 5)})
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, password=password, db=db, **options)
    return client


def parse_sentinels(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """The sentinels' addresses, and the master's password and database, of a
    ``sentinel://…;sentinel://…`` URL."""
    addresses: list[tuple[str, int]] = []
    password, db = None, 0
    for n, part in enumerate(p for p in url.split(";") if p.strip()):
        parts = urlsplit(part.strip())
        if parts.scheme != SENTINEL_SCHEME or not parts.hostname:
            raise ConfigError(f"Sentinel address {n + 1} must look like sentinel://host:port")
        try:
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ConfigError(f"Sentinel address {n + 1} has an invalid port") from None
        addresses.append((parts.hostname, port))
        if n == 0:
            password = unquote(parts.password) if parts.password else None
            path = parts.path.strip("/")
            if path and not path.isdigit():
                raise ConfigError("the database in a sentinel:// URL must be a number")
            db = int(path or 0)
    if not addresses:
        raise ConfigError("a sentinel:// URL needs at least one sentinel address")
    return addresses, password, db
