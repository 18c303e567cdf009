"""Ordered delivery (job field ``ordering``): which messages may go now, which must wait.

``partition``: one message at a time per partition. ``key``: one at a time per Kafka key
(within its partition), other keys in parallel; messages without a key are not held; with
``ordering_key``, one at a time per entity its records carry (within its partition). A
message holds its *lane* (partition, or partition and key) from dispatch until its final
outcome (delivered or dead-lettered), retries and ``Retry-After`` included, so a later
message never overtakes an earlier one. Held messages wait here, in the reader, in offset
order; the reader counts them toward ``max_in_flight``, so a held key never grows memory
without bound, and only the messages behind it wait.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Message

from rest_consumer.core.config import Settings
from rest_consumer.core.decoding import decode
from rest_consumer.core.errors import DecodeError
from rest_consumer.core.jobs import Job, setting
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import offset_of, partition_of

Lane = tuple[str, int, bytes | None]
"""Topic, partition and (``key`` mode) the message key, or one record's ``ordering_key``."""
RecordKeys = Callable[[Message], list[bytes]]
"""The ``ordering_key`` values of a message's records (``key`` mode with ``ordering_key``)."""


def gate_for(job: Job, settings: Settings) -> OrderGate | None:
    """The job's gate; None when it is not ordered."""
    mode = str(setting(job, "ordering"))
    if mode == "none":
        return None
    if not job.get("ordering_key"):
        return OrderGate(mode)
    compiled = CompiledJob(job, settings)

    def record_keys(msg: Message) -> list[bytes]:
        """Decoded here only to learn the entities; a message that does not decode takes no
        lane (the worker dead-letters it)."""
        try:
            decoded = decode(msg.value() or b"", settings.decode_limits)
        except DecodeError:
            return []
        found = (compiled.record_key(decoded.schema, record) for record in decoded.records)
        return [key for key in found if key is not None]

    return OrderGate(mode, record_keys)


@dataclass(eq=False)
class _Waiting:
    msg: Message
    lanes: tuple[Lane, ...]
    since: float


class OrderGate:
    """The lanes of one reader's partitions: which offset holds each, what waits behind it.

    With ``ordering_key`` a message may hold several lanes (one per entity its records carry):
    it goes when it is first in line on every one of them, and holds them all until final.
    Lines are kept in offset order, so the earliest waiting message can always go once the
    holders ahead of it are final: no message waits on a later one, no deadlock.
    """

    def __init__(self, mode: str, record_keys: RecordKeys | None = None) -> None:
        self.mode = mode
        self.record_keys = record_keys
        self._holder: dict[Lane, int] = {}
        self._lanes: dict[tuple[str, int, int], tuple[Lane, ...]] = {}
        """(topic, partition, offset) of each holder -> its lanes."""
        self._waiting: dict[Lane, deque[_Waiting]] = {}
        self.held = 0
        self.behind: dict[tuple[str, int, int], list[int]] = {}
        """Freed holders -> the offsets that waited on their lanes then (``heldbehind``);
        the reader takes them."""

    def lanes(self, msg: Message) -> tuple[Lane, ...]:
        """The message's lanes; none when it is not ordered (``key`` mode, no key)."""
        topic, partition = partition_of(msg)
        if self.mode == "partition":
            return ((topic, partition, None),)
        if self.record_keys is not None:
            return tuple((topic, partition, key) for key in dict.fromkeys(self.record_keys(msg)))
        key = msg.key()
        return () if key is None else ((topic, partition, key),)

    def admit(self, messages: list[Message],
              already_final: Callable[[Message], bool]) -> list[Message]:
        """Of ``messages`` (in offset order), those that may be dispatched now; the others
        wait behind their lanes' holders. A message known final takes no lane."""
        ready = []
        for msg in messages:
            lanes = self.lanes(msg)
            if not lanes or already_final(msg):
                ready.append(msg)
            elif any(lane in self._holder or lane in self._waiting for lane in lanes):
                entry = _Waiting(msg, lanes, time.monotonic())
                for lane in lanes:
                    self._waiting.setdefault(lane, deque()).append(entry)
                self.held += 1
            else:
                self._hold(lanes, msg)
                ready.append(msg)
        return ready

    def busy(self, topic: str, partition: int) -> list[int]:
        """The offsets holding lanes of a partition (to ask Redis which are final now)."""
        return [o for (t, p, o) in self._lanes if t == topic and p == partition]

    def partitions(self) -> set[tuple[str, int]]:
        return {(t, p) for (t, p, _) in self._lanes}

    def release(self, topic: str, partition: int, offsets: Iterable[int]) -> list[Message]:
        """These offsets are final: free their lanes; returns the messages that now hold
        lanes and may be dispatched."""
        ready = []
        for offset in offsets:
            lanes = self._lanes.pop((topic, partition, offset), None)
            if lanes is None:
                continue
            for lane in lanes:
                del self._holder[lane]
            waited = {offset_of(e.msg) for lane in lanes
                      for e in self._waiting.get(lane, ())}
            if waited:
                self.behind[(topic, partition, offset)] = sorted(waited)
            for lane in lanes:
                queue = self._waiting.get(lane)
                if queue and self._first_everywhere(queue[0]):
                    ready.append(self._start(queue[0]))
        return ready

    def drop(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Forget lanes and waiting messages (of these partitions, or all): they are read
        again from the watermark (rewind, set_offset, revoke)."""
        def gone(lane: Lane) -> bool:
            return partitions is None or (lane[0], lane[1]) in partitions
        self._lanes = {k: v for k, v in self._lanes.items() if not gone(v[0])}
        self._holder = {k: v for k, v in self._holder.items() if not gone(k)}
        dropped: set[int] = set()
        for lane in [lane for lane in self._waiting if gone(lane)]:
            dropped.update(id(entry) for entry in self._waiting.pop(lane))
        self.held -= len(dropped)

    def take_behind(self) -> dict[tuple[str, int, int], list[int]]:
        behind, self.behind = self.behind, {}
        return behind

    def oldest_wait(self) -> float | None:
        """Seconds the longest-waiting held message has waited; None when none waits."""
        starts = [queue[0].since for queue in self._waiting.values() if queue]
        return time.monotonic() - min(starts) if starts else None

    def _first_everywhere(self, entry: _Waiting) -> bool:
        return all(lane not in self._holder and self._waiting[lane][0] is entry
                   for lane in entry.lanes)

    def _start(self, entry: _Waiting) -> Message:
        """A waiting message leaves every line it was in and holds its lanes."""
        for lane in entry.lanes:
            queue = self._waiting[lane]
            queue.popleft()
            if not queue:
                del self._waiting[lane]
        self.held -= 1
        self._hold(entry.lanes, entry.msg)
        return entry.msg

    def _hold(self, lanes: tuple[Lane, ...], msg: Message) -> None:
        offset = offset_of(msg)
        for lane in lanes:
            self._holder[lane] = offset
        self._lanes[(lanes[0][0], lanes[0][1], offset)] = lanes
