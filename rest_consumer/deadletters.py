"""Dead letters: one Kafka topic per job, ``<CONSUMER_GROUP_PREFIX>.dlq.<job id>``.

Kafka Connect's dead-letter-queue convention: each record carries the original key and value
(the whole Kafka message, even when one record of a container failed), the original headers,
and headers named ``__rest_consumer.*`` for the reason, the last HTTP status, attempts and
the source topic/partition/offset/index. Their retention is the topic's (Kafka's default).

The topic is append-only, so replay and purge append *markers* (records with the header
``__rest_consumer.marker``) that say which letters are done with. A Redis sorted set of the
live letters' offsets makes paging cheap; it is an index, rebuilt from the topic whenever
Redis has lost it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from confluent_kafka import Message

from rest_consumer import heldbehind, keys
from rest_consumer.messages import Dispatcher, TaskMessage
from rest_consumer.topics import DurableWriter, Record, read_range, reader, watermarks

PREFIX = "__rest_consumer."
MARKER = PREFIX + "marker"


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

    def to_record(self) -> Record:
        m = self.message
        ours: dict[str, Any] = {
            "reason": self.reason, "status": self.status, "excerpt": self.excerpt,
            "attempts": self.attempts, "topic": m.topic, "partition": m.partition,
            "offset": m.offset, "index": self.index, "timestamp": m.timestamp,
            "record_id": None if self.record_id is None else json.dumps(self.record_id,
                                                                        default=str),
            "request": None if self.request is None else json.dumps(self.request),
            "time": f"{self.time or time.time():.3f}"}
        headers: list[tuple[str, str | bytes | None]] = list(m.headers)
        headers += [(PREFIX + name, str(value).encode()) for name, value in ours.items()
                    if value is not None]
        return m.key, m.value, headers

    @classmethod
    def from_record(cls, msg: Message) -> DeadLetter:
        raw: Any = msg.headers() or []
        ours = {k[len(PREFIX):]: (v or b"").decode("utf-8", "replace") for k, v in raw
                if k.startswith(PREFIX)}
        original = tuple((k, v) for k, v in raw if not k.startswith(PREFIX))

        def number(name: str) -> int | None:
            return int(ours[name]) if ours.get(name, "").lstrip("-").isdigit() else None

        message = TaskMessage(ours.get("topic", ""), number("partition") or 0,
                              number("offset") or 0, msg.key(), msg.value(),
                              number("timestamp"), original)
        return cls(message, ours.get("reason", ""), number("status"), ours.get("excerpt", ""),
                   number("attempts") or 0, number("index"),
                   json.loads(ours["record_id"]) if ours.get("record_id") else None,
                   json.loads(ours["request"]) if ours.get("request") else None,
                   float(ours.get("time") or 0))

    def shown(self, letter_id: int) -> dict[str, Any]:
        """The API's view: where it came from and why, never the value itself."""
        m = self.message
        return {"id": letter_id, "reason": self.reason, "status": self.status,
                "excerpt": self.excerpt, "attempts": self.attempts, "topic": m.topic,
                "partition": m.partition, "offset": m.offset, "index": self.index,
                "record_id": self.record_id, "request": self.request, "time": self.time}


def _marker(kind: str, body: dict[str, Any]) -> Record:
    return None, json.dumps(body).encode(), [(MARKER, kind.encode())]


def _marker_kind(msg: Message) -> str | None:
    raw: Any = msg.headers() or []
    for name, value in raw:
        if name == MARKER:
            return str((value or b"").decode())
    return None


class DeadLetterWriter:
    """What a worker uses: append a task's dead letters, learn their offsets."""

    def __init__(self, kafka_config: dict[str, Any], prefix: str) -> None:
        self.prefix = prefix
        self._writer = DurableWriter(kafka_config)

    def write(self, job_id: str, letters: list[DeadLetter]) -> list[int]:
        """Raises ``TopicError`` (or ``KafkaException``) unless Kafka holds them all."""
        if not letters:
            return []
        topic = topic_name(self.prefix, job_id)
        self._writer.ensure_topic(topic)
        return self._writer.write(topic, [letter.to_record() for letter in letters])


def index_letters(pipe: Any, job_id: str, offsets: list[int]) -> None:
    """Queue the index update for letters just written (on the task's outcome pipeline)."""
    if offsets:
        pipe.zadd(keys.dead_letter_index(job_id), {str(o): o for o in offsets})


class DeadLetterQueue:
    """What the API uses on one job's dead letters: count, page, replay, purge."""

    def __init__(self, client: redis.Redis, kafka_config: dict[str, Any], prefix: str,
                 job_id: str) -> None:
        self.redis = client
        self.kafka_config = kafka_config
        self.job_id = job_id
        self.topic = topic_name(prefix, job_id)
        self.index = keys.dead_letter_index(job_id)
        self._writer = DurableWriter(kafka_config)

    def count(self) -> int:
        self.ensure_index()
        return int(self.redis.zcard(self.index))

    def page(self, limit: int = 50, before: int | None = None) -> dict[str, Any]:
        """Newest first; ``next`` is the ``before`` of the following page (None at the end)."""
        self.ensure_index()
        top = "+inf" if before is None else f"({before}"
        found = self.redis.zrevrangebyscore(self.index, top, "-inf", start=0, num=limit + 1)
        ids = [int(cast(bytes, i)) for i in found]
        letters = self._fetch(ids[:limit])
        shown = [letters[i].shown(i) for i in ids[:limit] if i in letters]
        heldbehind.annotate(self.redis, self.job_id, shown)
        return {"dead_letters": shown, "total": int(self.redis.zcard(self.index)),
                "next": ids[limit - 1] if len(ids) > limit else None}

    def replay(self, dispatch: Dispatcher, job: dict[str, Any],
               ids: list[int] | None = None) -> list[int]:
        """Send dead letters again as fresh deliveries (all, or the ids given); returns those
        sent. Dispatched first, marked done after: a crash between sends one twice, never none.
        """
        self.ensure_index()
        live = {int(cast(bytes, i)) for i in self.redis.zrangebyscore(self.index, "-inf",
                                                                        "+inf")}
        chosen = sorted(live if ids is None else live & set(ids))
        letters = self._fetch(chosen)
        for letter_id in chosen:
            if letter_id in letters:
                letter = letters[letter_id]
                dispatch(job, [[letter.message.as_replay(letter.index)]])
        if chosen:
            if ids is None:
                self._mark("purged", {"before": chosen[-1] + 1})
            else:
                self._mark("replayed", {"ids": chosen})
            self.redis.zrem(self.index, *[str(i) for i in chosen])
        return chosen

    def purge(self) -> int:
        """Forget every dead letter written so far; returns how many there were."""
        self.ensure_index()
        high = self._mark_all_purged()
        self.redis.delete(keys.held_behind(self.job_id))
        return int(self.redis.zremrangebyscore(self.index, "-inf", f"({high}")) if high else 0

    def forget(self) -> None:
        """The job is deleted: its letters so far are done with, so a new job with this id
        starts with none. The records stay in Kafka until its retention removes them."""
        self._mark_all_purged()

    def _mark_all_purged(self) -> int:
        consumer = reader(self.kafka_config)
        try:
            _, high = watermarks(consumer, self.topic)
        finally:
            consumer.close()
        if high:
            self._mark("purged", {"before": high})
        return high

    def ensure_index(self) -> None:
        """Rebuild the index from the topic unless Redis has it."""
        if self.redis.exists(keys.dead_letter_scanned(self.job_id)):
            return
        consumer = reader(self.kafka_config)
        try:
            low, high = watermarks(consumer, self.topic)
            live: set[int] = set()
            for msg in read_range(consumer, self.topic, low, high):
                _apply(live, msg)
        finally:
            consumer.close()
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(self.index, "-inf", f"({high}")
        if live:
            pipe.zadd(self.index, {str(o): o for o in live})
        pipe.set(keys.dead_letter_scanned(self.job_id), high)
        pipe.execute()

    def _fetch(self, ids: list[int]) -> dict[int, DeadLetter]:
        """The letters at these offsets; those gone with Kafka's retention leave the index."""
        if not ids:
            return {}
        wanted = set(ids)
        found: dict[int, DeadLetter] = {}
        consumer = reader(self.kafka_config)
        try:
            low, high = watermarks(consumer, self.topic)
            start = max(min(ids), low)
            for msg in read_range(consumer, self.topic, start, min(max(ids) + 1, high)):
                offset = int(msg.offset() or 0)
                if offset in wanted and _marker_kind(msg) is None:
                    found[offset] = DeadLetter.from_record(msg)
        finally:
            consumer.close()
        if low > min(ids):
            self.redis.zremrangebyscore(self.index, "-inf", f"({low}")
        return found

    def _mark(self, kind: str, body: dict[str, Any]) -> None:
        self._writer.ensure_topic(self.topic)
        self._writer.write(self.topic, [_marker(kind, body)])


def _apply(live: set[int], msg: Message) -> None:
    """One record of the topic, in order: a letter joins ``live``, a marker removes some."""
    kind = _marker_kind(msg)
    if kind is None:
        live.add(int(msg.offset() or 0))
        return
    body = json.loads(msg.value() or b"{}")
    if kind == "replayed":
        live.difference_update(int(i) for i in body.get("ids", []))
    elif kind == "purged":
        before = int(body.get("before", 0))
        live.difference_update([o for o in live if o < before])

