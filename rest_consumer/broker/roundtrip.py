"""Redis commands sent in one write and answered in one read: a lean pipeline for the
round trips every task makes (the two of ``deliver``; kombu's ack and unacked record).

redis-py's ``Pipeline`` spends more CPU around each command than Redis spends running it
(packing through its encoder, response callbacks, observability hooks): with one message
per task that was a fifth of a worker's CPU (bench/, ``--profile worker:batch1``). A
``RoundTrip`` takes the same command methods (redis-py's own ``CoreCommands`` build the
arguments), packs them with hiredis, and reads the raw replies through a redis-py connection
of the client's pool, so authentication, TLS, Sentinel and timeouts behave as for any other
command.

Replies are what the connection's protocol parses (RESP3, redis-py 8's default), without
redis-py's response callbacks: ``SET`` answers ``b"OK"`` or None, not True.

Several modules queue commands on one round trip; each names its part (``section``) and reads
its own replies by that name (``replies``), never by position. Lua scripts live in files of
their own (``LuaScript``), read once, and go by their SHA1 (``EVALSHA``); a server that does
not know one yet (restarted, flushed) gets that one command again with the source.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hiredis
import redis
from redis.commands.core import CoreCommands
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True)
class LuaScript:
    """A Lua script kept in a file of its own, read once, sent by its SHA1."""

    source: str
    sha: str

    @classmethod
    def read(cls, package: str, name: str) -> LuaScript:
        source = resources.files(package).joinpath(name).read_text()
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

    def register(self, client: Any) -> Any:
        """For a plain redis-py client: its ``Script`` (EVALSHA, then EVAL when unknown)."""
        return client.register_script(self.source)


class RoundTrip(CoreCommands):
    """Commands queued by redis-py's command methods; ``execute`` sends them at once."""

    _event_dispatcher: Any = None  # redis-py's command protocol asks for one; never used

    def __init__(self, client: redis.Redis, transaction: bool = False,
                 own_connection: bool = False) -> None:
        self.pool = client.connection_pool
        self.transaction = transaction
        """Wrap the commands in MULTI/EXEC, as ``client.pipeline()`` does by default."""
        self.own_connection = own_connection
        """Use this thread's own connection (``_own_connection``): for the few threads that
        make a round trip per task; others check one out of the pool."""
        self.commands: list[tuple[Any, ...]] = []
        self._sections: dict[str, tuple[int, int]] = {}
        self._scripts: dict[int, LuaScript] = {}
        self._replies: list[Any] = []

    @contextmanager
    def section(self, name: str) -> Iterator[RoundTrip]:
        """The commands queued inside are ``name``'s: ``replies(name)`` after ``execute``."""
        start = len(self.commands)
        yield self
        self._sections[name] = (start, len(self.commands))

    def replies(self, name: str) -> list[Any]:
        """The replies of section ``name``, in the order its commands were queued."""
        start, end = self._sections[name]
        return self._replies[start:end]

    def script(self, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> RoundTrip:
        """Queue a run of ``script`` (by its SHA1)."""
        if self.transaction:
            raise ValueError("a script in a transaction could not be sent again alone")
        self._scripts[len(self.commands)] = script
        return self.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def execute_command(self, *args: Any, **options: Any) -> RoundTrip:
        """Queue one command (``options`` are redis-py's parsing hints, unused raw); returns
        the round trip, so that commands chain as on a redis-py pipeline."""
        self.commands.append(args)
        return self

    def execute(self) -> list[Any]:
        """Every command's raw reply, in order; the first error reply is raised after all
        replies are read, as a pipeline does. Connection errors are retried as the client's
        own commands are (its ``Retry``): like a pipeline, the whole batch again."""
        if not self.commands:
            return []
        commands = self.commands
        if self.transaction:
            commands = [("MULTI",), *commands, ("EXEC",)]
        replies = self._send(commands)
        if self.transaction:
            replies = _transaction_replies(replies)
        for index, script in self._scripts.items():
            reply = replies[index]
            if isinstance(reply, NoScriptError):
                # not run: alone again, with its source (the others' replies stand)
                args = self.commands[index][2:]
                replies[index] = self._send([("EVAL", script.source, *args)])[0]
        self._replies = replies
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        packed = b"".join(hiredis.pack_command(args) for args in commands)
        conn: Any = (_own_connection(self.pool) if self.own_connection
                     else self.pool.get_connection())
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: self._write_and_read(conn, packed, len(commands)),
                lambda _: conn.disconnect())
        finally:
            if not self.own_connection:
                self.pool.release(conn)
        return replies

    @staticmethod
    def _write_and_read(conn: Any, packed: bytes, count: int) -> list[Any]:
        try:
            # As the pool's checkout does: a Sentinel-managed connection finds the primary
            # in connect(); writing on a closed one would connect without asking.
            conn.connect()
            conn.send_packed_command([packed])
            replies = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except ResponseError as e:
                    replies.append(e)
            return replies
        except BaseException:
            # Interrupted between the write and the last reply (a soft time limit, say):
            # replies still on the socket would answer the next user of this connection.
            conn.disconnect()
            raise


_own = threading.local()


def _own_connection(pool: Any) -> Any:
    """This thread's own connection to ``pool``'s server, made as the pool makes its own
    but kept out of it: the pool's checkout and return cost more CPU than the round trip
    (redis-py 8's observability and re-authentication hooks, a readability check). Each
    thread that asks keeps one more connection open; a forked child makes its own."""
    held: dict[int, tuple[weakref.ref[Any], int, Any]] | None = getattr(_own, "held", None)
    if held is None:
        held = _own.held = {}
    entry, pid = held.get(id(pool)), os.getpid()
    if entry is None or entry[0]() is not pool or entry[1] != pid:
        entry = held[id(pool)] = (weakref.ref(pool), pid,
                                  pool.connection_class(**pool.connection_kwargs))
    return entry[2]


def _transaction_replies(replies: list[Any]) -> list[Any]:
    """MULTI's OK, then QUEUED (or a refusal) for each command, then EXEC's reply: the
    commands' replies, or the refusals when EXEC aborted the transaction."""
    if isinstance(replies[-1], list):
        return replies[-1]
    return [r for r in replies[:-1] if isinstance(r, ResponseError)] or [replies[-1]]
