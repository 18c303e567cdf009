"""Redis commands sent in one write and answered in one read: a lean non-transactional
pipeline for the two round trips every ``deliver`` task makes.

redis-py's ``Pipeline`` spends more CPU around each command than Redis spends running it
(packing through its encoder, response callbacks, observability hooks): with one message
per task that was a fifth of a worker's CPU (bench/, ``--profile worker:batch1``). A
``RoundTrip`` takes the same command methods (redis-py's own ``CoreCommands`` build the
arguments), packs them with hiredis, and reads the raw replies through a pooled redis-py
connection, so authentication, TLS, Sentinel and timeouts behave as for any other command.

Replies are what the connection's protocol parses (RESP3, redis-py 8's default), without
redis-py's response callbacks: ``SET`` answers ``b"OK"`` or None, not True.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.commands.core import CoreCommands
from redis.exceptions import ResponseError


class RoundTrip(CoreCommands):
    """Commands queued by redis-py's command methods; ``execute`` sends them at once."""

    _event_dispatcher: Any = None  # redis-py's command protocol asks for one; never used

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        """Queue one command (``options`` are redis-py's parsing hints, unused raw)."""
        self.commands.append(args)

    def execute(self) -> list[Any]:
        """Every command's raw reply, in order; the first error reply is raised after all
        replies are read, as a pipeline does. Connection errors are retried as the client's
        own commands are (its ``Retry``): like a pipeline, the whole batch again."""
        if not self.commands:
            return []
        packed = b"".join(hiredis.pack_command(args) for args in self.commands)
        conn: Any = self.pool.get_connection()  # redis-py's Connection is untyped
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: self._exchange(conn, packed), lambda _: conn.disconnect())
        finally:
            self.pool.release(conn)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def _exchange(self, conn: Any, packed: bytes) -> list[Any]:
        try:
            conn.send_packed_command([packed])
            replies = []
            for _ in self.commands:
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
