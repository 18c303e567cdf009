"""Ordered delivery (job field ``ordering``): which messages may go now, which must wait.

``partition``: one message at a time per partition. ``key``: one at a time per Kafka key
(within its partition), other keys in parallel; messages without a key are not held; with
``ordering_key``, one at a time per entity its records carry (within its partition). A
message holds its *line* (partition, or partition and key) from dispatch until its final
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

Line = tuple[str, int, bytes | None]
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
        line (the worker dead-letters it)."""
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
    lines: tuple[Line, ...]
    since: float


class OrderGate:
    """The lines of one reader's partitions: which offset holds each, what waits behind it.

    With ``ordering_key`` a message may hold several lines (one per entity its records carry):
    it goes when it is first in line on every one of them, and holds them all until final.
    Lines are kept in offset order, so the earliest waiting message can always go once the
    holders ahead of it are final: no message waits on a later one, no deadlock.
    """

    def __init__(self, mode: str, record_keys: RecordKeys | None = None) -> None:
        self.mode = mode
        self.record_keys = record_keys
        self._holder: dict[Line, int] = {}
        self._lines: dict[tuple[str, int, int], tuple[Line, ...]] = {}
        """(topic, partition, offset) of each holder -> its lines."""
        self._waiting: dict[Line, deque[_Waiting]] = {}
        self.held = 0
        self.behind: dict[tuple[str, int, int], list[int]] = {}
        """Freed holders -> the offsets that waited on their lines then (``heldbehind``);
        the reader takes them."""

    def lines(self, msg: Message) -> tuple[Line, ...]:
        """The message's lines; none when it is not ordered (``key`` mode, no key)."""
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
        wait behind their lines' holders. A message known final takes no line."""
        ready = []
        for msg in messages:
            lines = self.lines(msg)
            if not lines or already_final(msg):
                ready.append(msg)
            elif any(line in self._holder or line in self._waiting for line in lines):
                entry = _Waiting(msg, lines, time.monotonic())
                for line in lines:
                    self._waiting.setdefault(line, deque()).append(entry)
                self.held += 1
            else:
                self._hold(lines, msg)
                ready.append(msg)
        return ready

    def busy(self, topic: str, partition: int) -> list[int]:
        """The offsets holding lines of a partition (to ask Redis which are final now)."""
        return [o for (t, p, o) in self._lines if t == topic and p == partition]

    def partitions(self) -> set[tuple[str, int]]:
        return {(t, p) for (t, p, _) in self._lines}

    def release(self, topic: str, partition: int, offsets: Iterable[int]) -> list[Message]:
        """These offsets are final: free their lines; returns the messages that now hold
        lines and may be dispatched."""
        ready = []
        for offset in offsets:
            lines = self._lines.pop((topic, partition, offset), None)
            if lines is None:
                continue
            for line in lines:
                del self._holder[line]
            waited = {offset_of(e.msg) for line in lines
                      for e in self._waiting.get(line, ())}
            if waited:
                self.behind[(topic, partition, offset)] = sorted(waited)
            for line in lines:
                queue = self._waiting.get(line)
                if queue and self._first_everywhere(queue[0]):
                    ready.append(self._start(queue[0]))
        return ready

    def drop(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Forget lines and waiting messages (of these partitions, or all): they are read
        again from the watermark (rewind, set_offset, revoke)."""
        def gone(line: Line) -> bool:
            return partitions is None or (line[0], line[1]) in partitions
        self._lines = {k: v for k, v in self._lines.items() if not gone(v[0])}
        self._holder = {k: v for k, v in self._holder.items() if not gone(k)}
        dropped: set[int] = set()
        for line in [line for line in self._waiting if gone(line)]:
            dropped.update(id(entry) for entry in self._waiting.pop(line))
        self.held -= len(dropped)

    def take_behind(self) -> dict[tuple[str, int, int], list[int]]:
        behind, self.behind = self.behind, {}
        return behind

    def oldest_wait(self) -> float | None:
        """Seconds the longest-waiting held message has waited; None when none waits."""
        starts = [queue[0].since for queue in self._waiting.values() if queue]
        return time.monotonic() - min(starts) if starts else None

    def _first_everywhere(self, entry: _Waiting) -> bool:
        return all(line not in self._holder and self._waiting[line][0] is entry
                   for line in entry.lines)

    def _start(self, entry: _Waiting) -> Message:
        """A waiting message leaves every line it was in and holds its lines."""
        for line in entry.lines:
            queue = self._waiting[line]
            queue.popleft()
            if not queue:
                del self._waiting[line]
        self.held -= 1
        self._hold(entry.lines, entry.msg)
        return entry.msg

    def _hold(self, lines: tuple[Line, ...], msg: Message) -> None:
        offset = offset_of(msg)
        for line in lines:
            self._holder[line] = offset
        self._lines[(lines[0][0], lines[0][1], offset)] = lines
