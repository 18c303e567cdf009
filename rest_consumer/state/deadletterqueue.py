"""One job's dead letters as the API uses them: count, page, replay, purge.

The topic is append-only, so replay and purge append *markers* (records with the header
``__rest_consumer.marker`` and no letter header) that say which letters are done with. A Redis
sorted set of the live letters' offsets makes paging cheap; it is an index, rebuilt from the
topic whenever Redis has lost it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis
from confluent_kafka import Message

from rest_consumer.core.messages import Dispatcher, offset_of
from rest_consumer.state import heldbehind, keys
from rest_consumer.state.deadletters import MARKER, PREFIX, DeadLetter, topic_name
from rest_consumer.state.topics import DurableWriter, Record, read_range, reader, watermarks

log = logging.getLogger(__name__)

REPLAY_CHUNK = 200
"""Dead letters fetched at once by a replay of all of them: memory stays bounded."""


def _marker(kind: str, body: dict[str, Any]) -> Record:
    return None, json.dumps(body).encode(), [(MARKER, kind.encode())]


def _marker_kind(msg: Message) -> str | None:
    """The kind of a marker record, or None for a letter. Only the project writes headers in
    its namespace (``_escaped``), and a marker carries no letter header: a letter whose source
    held a marker header (written before escaping) is still a letter."""
    raw: Any = msg.headers() or []
    names = {name: value for name, value in raw}
    if MARKER not in names or PREFIX + "reason" in names:
        return None
    return (names[MARKER] or b"").decode("utf-8", "replace")



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
        Read ``REPLAY_CHUNK`` at a time, so a replay of every letter holds a chunk in memory.
        A letter whose value was cut to fit is not sent (it would send what was cut): it
        stays, and the log says where its original is.
        """
        self.ensure_index()
        live = {int(cast(bytes, i)) for i in self.redis.zrangebyscore(self.index, "-inf",
                                                                        "+inf")}
        chosen = sorted(live if ids is None else live & set(ids))
        sent: list[int] = []
        kept = 0
        for start in range(0, len(chosen), REPLAY_CHUNK):
            chunk = chosen[start:start + REPLAY_CHUNK]
            kept_here = self._replay_chunk(dispatch, job, chunk, sent)
            kept += len(kept_here)
            done = [i for i in chunk if i not in kept_here]
            if not done:
                continue
            if ids is None and not kept:  # every live letter below this one is done with
                self._mark("purged", {"before": chunk[-1] + 1})
            else:
                self._mark("replayed", {"ids": done})
            self.redis.zrem(self.index, *[str(i) for i in done])
        return sent

    def _replay_chunk(self, dispatch: Dispatcher, job: dict[str, Any], chunk: list[int],
                      sent: list[int]) -> set[int]:
        """Dispatch one chunk's letters; returns the ids kept (cut values)."""
        letters = self._fetch(chunk)
        kept: set[int] = set()
        for letter_id in chunk:
            letter = letters.get(letter_id)
            if letter is None:  # gone with retention, or not a letter: done with either way
                continue
            if "value" in letter.truncated:
                m = letter.message
                log.warning("job %s: dead letter %d holds a value cut to fit Kafka; not "
                            "replayed (the original is %s)", self.job_id, letter_id,
                            m.describe())
                kept.add(letter_id)
                continue
            dispatch(job, [[letter.message.as_replay(letter.index)]])
            sent.append(letter_id)
        return kept

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
                offset = offset_of(msg)
                if offset in wanted and _marker_kind(msg) is None:
                    try:
                        found[offset] = DeadLetter.from_record(msg)
                    except ValueError as e:
                        log.warning("job %s: the record at %s@%d is not a dead letter (%s); "
                                    "skipped", self.job_id, self.topic, offset, e)
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
        live.add(offset_of(msg))
        return
    try:
        body = json.loads(msg.value() or b"{}")
        if kind == "replayed":
            live.difference_update([int(i) for i in body.get("ids", [])])
        elif kind == "purged":
            before = int(body.get("before", 0))
            live.difference_update([o for o in live if o < before])
    except (ValueError, TypeError, AttributeError) as e:
        log.warning("the %s marker at %s@%s does not parse (%s); skipped", kind, msg.topic(),
                    msg.offset(), e)

