"""The one owner of the task-message wire format: a Kafka message as ``deliver`` carries it.

Task arguments must be JSON-safe and small, so the keys are short and bytes are base64; no
other module spells them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import Message

Headers = tuple[tuple[str, bytes | None], ...]
TopicPartitionKey = tuple[str, int]
"""(topic, partition): how the reader keys what it holds per partition."""


def partition_of(msg: Message) -> TopicPartitionKey:
    """A Kafka message's (topic, partition)."""
    return str(msg.topic()), int(msg.partition() or 0)


def offset_of(msg: Message) -> int:
    """A Kafka message's offset."""
    return int(msg.offset() or 0)


@dataclass(frozen=True)
class TaskMessage:
    """One Kafka message, and how far its delivery has come."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    timestamp: int | None = None
    headers: Headers = ()
    attempt: int = 0
    """Failed attempts so far (rate-limit waits and deferrals do not count)."""
    indexes: tuple[int, ...] | None = None
    """The records still to send; None for all of them."""
    replay: bool = False
    """A dead letter sent again: outside the reader's watermark, so it moves no offset."""
    letter_refusals: int = 0
    """How often Kafka refused this message's dead letters or responses (bounded:
    ``outcomes``)."""
    responses: tuple[dict[str, Any], ...] = ()
    """Responses records of its delivered records that Kafka has not taken yet, written by
    the next run instead of sending those records again; JSON-safe, ``state.responses``
    owns their keys."""

    @classmethod
    def from_kafka(cls, msg: Message) -> TaskMessage:
        raw_headers: Any = msg.headers() or []
        headers = tuple((str(k), v if v is None or isinstance(v, bytes) else str(v).encode())
                        for k, v in raw_headers)
        return cls(*partition_of(msg), offset_of(msg), msg.key(), msg.value(),
                   msg.timestamp()[1], headers)

    def to_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"t": self.topic, "p": self.partition, "o": self.offset,
                                "k": _b64(self.key), "v": _b64(self.value), "ts": self.timestamp,
                                "h": [[k, _b64(v)] for k, v in self.headers]}
        if self.attempt:
            args["a"] = self.attempt
        if self.indexes is not None:
            args["i"] = list(self.indexes)
        if self.replay:
            args["r"] = 1
        if self.letter_refusals:
            args["lr"] = self.letter_refusals
        if self.responses:
            args["rs"] = list(self.responses)
        return args

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> TaskMessage:
        """Raises ValueError when ``args`` is not a task message."""
        try:
            indexes = args.get("i")
            return cls(str(args["t"]), int(args["p"]), int(args["o"]), _unb64(args.get("k")),
                       _unb64(args.get("v")), args.get("ts"),
                       tuple((str(k), _unb64(v)) for k, v in args.get("h") or []),
                       int(args.get("a", 0)),
                       None if indexes is None else tuple(int(i) for i in indexes),
                       bool(args.get("r")), int(args.get("lr", 0)),
                       tuple(dict(r) for r in args.get("rs") or []))
        except (KeyError, TypeError, binascii.Error) as e:
            raise ValueError(f"not a task message: {e}") from e

    def idempotency_key(self, job_id: str, index: int) -> str:
        return f"{job_id}:{self.topic}:{self.partition}:{self.offset}:{index}"

    def retry(self, indexes: list[int], failed: bool) -> TaskMessage:
        """This message again, for the records still to send; ``failed`` counts an attempt."""
        return replace(self, indexes=tuple(indexes), attempt=self.attempt + int(failed))

    def original(self) -> TaskMessage:
        """The message as Kafka holds it: no attempt, every record, not a replay."""
        return replace(self, attempt=0, indexes=None, replay=False, letter_refusals=0,
                       responses=())

    def as_replay(self, index: int | None) -> TaskMessage:
        """A dead letter sent again: one record (or all, for a message that failed whole)."""
        return replace(self, attempt=0, replay=True, letter_refusals=0, responses=(),
                       indexes=None if index is None else (index,))

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def meta(self, index: int) -> dict[str, Any]:
        """``$.meta`` of one record's mapping document."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "key": _text(self.key), "timestamp": self.timestamp,
                "headers": {k: _text(v) for k, v in self.headers}, "index": index}


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _unb64(value: str | None) -> bytes | None:
    # ``b64decode(value, validate=True)`` checks with a regular expression first: slower.
    return None if value is None else binascii.a2b_base64(value, strict_mode=True)


def _text(value: bytes | None) -> str | None:
    """UTF-8 where it can be; else the base64 text."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


Dispatcher = Callable[[dict[str, Any], list[list[TaskMessage]]], list[str]]
"""Sends one ``deliver`` task per group of messages of a job (``tasks.make_dispatcher``);
returns the tasks' ids, one per group."""
