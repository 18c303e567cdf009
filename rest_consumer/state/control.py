"""Control messages on ``msg/job:<id>``: building, publishing, parsing, listening."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from rest_consumer.state import keys
from rest_consumer.state.replies import as_text

log = logging.getLogger(__name__)

ACTIONS = ("upsert", "delete", "start", "stop", "set_offset")


@dataclass(frozen=True)
class Command:
    """One control message for one job."""

    job_id: str
    action: str
    hash: str | None = None
    offset: str | int | None = None

    def payload(self) -> str:
        return json.dumps({"action": self.action, "hash": self.hash, "offset": self.offset})


def publish(client: Any, command: Command) -> None:
    """Publish on the job's channel; ``client`` may be a pipeline, so it joins a transaction."""
    client.publish(keys.control_channel(command.job_id), command.payload())


def parse(channel: str | bytes, data: str | bytes) -> Command | None:
    """The command in a pub/sub message, or None (logged) when it is malformed."""
    channel = as_text(channel)
    try:
        body = json.loads(data)
        action = body["action"]
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring malformed control message on %s: %r", channel, data)
        return None
    if action not in ACTIONS:
        log.warning("ignoring unknown control action %r on %s", action, channel)
        return None
    return Command(keys.job_id_from_channel(channel), action, body.get("hash"), body.get("offset"))


class ControlListener(threading.Thread):
    """Follows every ``msg/job:*`` channel and hands each command to ``handle``.

    Survives Redis restarts: on a connection error it resubscribes after a pause and calls
    ``on_reconnect`` (the owner reconciles, since messages sent meanwhile are lost).
    """

    def __init__(self, client: redis.Redis, handle: Callable[[Command], None],
                 on_reconnect: Callable[[], None] | None = None, retry_delay: float = 1.0) -> None:
        super().__init__(name="control-listener", daemon=True)
        self._client = client
        self._handle = handle
        self._on_reconnect = on_reconnect
        self._retry_delay = retry_delay
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                self._listen(reconnected=not first)
            except redis.RedisError as e:
                log.warning("control channel lost (%s); resubscribing", e)
            except Exception:
                log.exception("unexpected error in the control listener; resubscribing")
            first = False
            self._stopping.wait(self._retry_delay)

    def _listen(self, reconnected: bool) -> None:
        pubsub = self._client.pubsub(  # type: ignore[no-untyped-call]
            ignore_subscribe_messages=True)
        try:
            pubsub.psubscribe(keys.CONTROL_PATTERN)
            if reconnected and self._on_reconnect is not None:
                self._on_reconnect()
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message and message["type"] == "pmessage":
                    command = parse(message["channel"], message["data"])
                    if command is not None:
                        self._handle(command)
        finally:
            pubsub.close()
