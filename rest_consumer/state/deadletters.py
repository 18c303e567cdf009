"""Dead letters: one Kafka topic per job, ``<CONSUMER_GROUP_PREFIX>.dlq.<job id>``.

Kafka Connect's dead-letter-queue convention: each record carries the original key and value
(the whole Kafka message, even when one record of a container failed), the original headers,
and headers named ``__rest_consumer.*`` for the reason, the last HTTP status, attempts and
the source topic/partition/offset/index. Their retention is the topic's (Kafka's default).
What the API does with them (paging, replay, purge, the index) is in ``deadletterqueue``.

What a Kafka writer put in the source message cannot pass for ours: a source header named in
our namespace (or in the escape's) is written under ``__source.``, so every ``__rest_consumer.*``
header of a letter was written by the project; a marker is a record with the marker header and
no letter headers; a record that does not parse is skipped with a log line. A letter always
fits Kafka: what is too large of the original value and the request body is cut to fit, and
the headers say what was cut and the original size (the source topic, partition and offset
still lead to the whole original).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from rest_consumer.core.messages import TaskMessage
from rest_consumer.state import keys
from rest_consumer.state.topics import (
    DurableWriter,
    Record,
    Refusal,
)

log = logging.getLogger(__name__)

PREFIX = "__rest_consumer."
MARKER = PREFIX + "marker"
ESCAPE = "__source."
"""Before a source header whose name would read as ours (or as escaped)."""
MAX_LETTER_BYTES = 900_000
"""A letter's key, value and headers together: under librdkafka's ``message.max.bytes``
(1,000,000) and the broker's default ``max.message.bytes`` (1,048,588), with room to spare."""
HEADER_OVERHEAD = 16
"""What framing a record header costs beyond its name and value (an upper bound)."""
MAX_SOURCE_HEADERS_SHARE = 4
"""Source headers over 1/4 of the budget are left out (the original still has them)."""
MAX_KEY_BYTES = 64 * 1024
MIN_BODY_KEPT = 1024
"""Of a request body that does not fit, at least this much is kept, the value cut instead."""


def topic_name(prefix: str, job_id: str) -> str:
    return f"{prefix}.dlq.{job_id}"


@dataclass(frozen=True)
class DeadLetter:
    """One record (or a whole message, ``index`` None) that will not be delivered."""

    message: TaskMessage
    """The Kafka message as it was read (every record, no attempt)."""
    reason: str
    status: int | None = None
    excerpt: str = ""
    attempts: int = 0
    index: int | None = None
    record_id: Any = None
    request: dict[str, Any] | None = None
    """The last request, without its secrets (``RequestSpec.public``)."""
    time: float = 0.0
    truncated: tuple[str, ...] = ()
    """What was cut to fit Kafka, as read back: ``key``, ``headers``, ``request``, ``value``."""
    value_size: int | None = None
    """The original value's size, when something was cut."""

    def to_record(self, max_bytes: int = MAX_LETTER_BYTES) -> Record:
        """Key, value and headers, within ``max_bytes``: what does not fit is cut, and the
        ``truncated`` header names what (``key``, ``headers``, ``request``, ``value``)."""
        m = self.message
        fit = _Fit(max_bytes)
        key = fit.cut_bytes("key", m.key, MAX_KEY_BYTES)
        source = [(_escaped(k), v) for k, v in m.headers]
        if _headers_size(source) > max_bytes // MAX_SOURCE_HEADERS_SHARE:
            source, fit.cut = [], [*fit.cut, "headers"]
        ours = self._headers()
        request = dict(self.request) if self.request is not None else None
        body = request.pop("body", None) if request is not None else None
        room = (max_bytes - len(key or b"") - _headers_size(source) - _headers_size(ours)
                - len(json.dumps(request or {})) - 200)  # 200: truncation headers and margin
        value, body = fit.share(m.value, body, room)
        if request is not None:
            ours["request"] = json.dumps(request if body is None else {**request, "body": body})
        if fit.cut:
            ours["truncated"] = ",".join(fit.cut)
            ours["value_size"] = len(m.value or b"")
        headers: list[tuple[str, str | bytes | None]] = [*source]
        headers += [(PREFIX + name, str(v).encode()) for name, v in ours.items()]
        return key, value, headers

    def _headers(self) -> dict[str, Any]:
        """Ours, but the request: reason, status, attempts, where from, when."""
        m = self.message
        ours: dict[str, Any] = {
            "reason": self.reason, "status": self.status, "excerpt": self.excerpt,
            "attempts": self.attempts, "topic": m.topic, "partition": m.partition,
            "offset": m.offset, "index": self.index, "timestamp": m.timestamp,
            "record_id": None if self.record_id is None else json.dumps(self.record_id,
                                                                        default=str),
            "time": f"{self.time or time.time():.3f}"}
        return {name: value for name, value in ours.items() if value is not None}

    @classmethod
    def from_record(cls, msg: Message) -> DeadLetter:
        """ValueError when the record is not a letter as ``to_record`` writes one."""
        raw: Any = msg.headers() or []
        ours = {k[len(PREFIX):]: (v or b"").decode("utf-8", "replace") for k, v in raw
                if k.startswith(PREFIX)}
        original = tuple((k[len(ESCAPE):] if k.startswith(ESCAPE) else k, v) for k, v in raw
                         if not k.startswith(PREFIX))

        def number(name: str) -> int | None:
            return int(ours[name]) if ours.get(name, "").lstrip("-").isdigit() else None

        message = TaskMessage(ours.get("topic", ""), number("partition") or 0,
                              number("offset") or 0, msg.key(), msg.value(),
                              number("timestamp"), original)
        return cls(message, ours.get("reason", ""), number("status"), ours.get("excerpt", ""),
                   number("attempts") or 0, number("index"),
                   json.loads(ours["record_id"]) if ours.get("record_id") else None,
                   json.loads(ours["request"]) if ours.get("request") else None,
                   float(ours.get("time") or 0),
                   tuple(c for c in ours.get("truncated", "").split(",") if c),
                   number("value_size"))

    def shown(self, letter_id: int) -> dict[str, Any]:
        """The API's view: where it came from and why, never the value itself."""
        m = self.message
        shown = {"id": letter_id, "reason": self.reason, "status": self.status,
                 "excerpt": self.excerpt, "attempts": self.attempts, "topic": m.topic,
                 "partition": m.partition, "offset": m.offset, "index": self.index,
                 "record_id": self.record_id, "request": self.request, "time": self.time}
        if self.truncated:
            shown.update(truncated=list(self.truncated), value_size=self.value_size)
        return shown


class _Fit:
    """What a letter keeps of its large parts, and the names of those it cut."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.cut: list[str] = []

    def cut_bytes(self, name: str, data: bytes | None, most: int) -> bytes | None:
        if data is None or len(data) <= most:
            return data
        self.cut.append(name)
        return data[:max(most, 0)]

    def share(self, value: bytes | None, body: str | None,
              room: int) -> tuple[bytes | None, str | None]:
        """The value and the request body within ``room`` bytes: the body is cut first (the
        job rebuilds it from the value), the value only when it does not fit alone."""
        body_bytes = (body or "").encode()
        if len(value or b"") + len(body_bytes) <= room:
            return value, body
        body_room = max(room - len(value or b""), min(len(body_bytes), MIN_BODY_KEPT))
        if body is not None and len(body_bytes) > body_room:
            self.cut.append("request")
            body = body_bytes[:body_room].decode("utf-8", "ignore")
        value = self.cut_bytes("value", value, room - len((body or "").encode()))
        return value, body


def _escaped(name: str) -> str:
    """A source header's name in a letter: never one of ours."""
    return ESCAPE + name if name.startswith((PREFIX, ESCAPE)) else name


def _headers_size(headers: Any) -> int:
    items = headers.items() if isinstance(headers, dict) else headers
    return sum(len(name) + len(str(value) if not isinstance(value, bytes) else value)
               + HEADER_OVERHEAD for name, value in items if value is not None)


class DeadLetterWriter:
    """What a worker uses: append a task's dead letters, learn their offsets."""

    def __init__(self, kafka_config: dict[str, Any], prefix: str) -> None:
        self.prefix = prefix
        self._writer = DurableWriter(kafka_config)
        self.max_bytes = min(MAX_LETTER_BYTES,
                             int(kafka_config.get("message.max.bytes", 1_000_000)) * 9 // 10)
        """A letter's size at most: nine tenths of the producer's ``message.max.bytes``."""

    def write(self, job_id: str, letters: list[DeadLetter]) -> list[int | Refusal]:
        """Each letter's offset, or why Kafka does not hold it; ``TopicError`` (or
        ``KafkaException``) when the topic cannot be created."""
        if not letters:
            return []
        topic = topic_name(self.prefix, job_id)
        self._writer.ensure_topic(topic)
        return self._writer.write_each(topic, [letter.to_record(self.max_bytes)
                                               for letter in letters])


def index_letters(pipe: Any, job_id: str, offsets: list[int]) -> None:
    """Queue the index update for letters just written (on the task's outcome pipeline)."""
    if offsets:
        pipe.zadd(keys.dead_letter_index(job_id), {str(o): o for o in offsets})
