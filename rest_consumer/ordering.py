"""Ordered delivery (job field ``ordering``): which messages may go now, which must wait.

``partition``: one message at a time per partition. ``key``: one at a time per Kafka key
(within its partition), other keys in parallel; messages without a key are not held. A
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

from confluent_kafka import Message

Lane = tuple[str, int, bytes | None]
"""Topic, partition and (``key`` mode) the message key."""


class OrderGate:
    """The lanes of one reader's partitions: which offset holds each, what waits behind it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._holder: dict[Lane, int] = {}
        self._lanes: dict[tuple[str, int, int], Lane] = {}
        """(topic, partition, offset) of each holder -> its lane."""
        self._waiting: dict[Lane, deque[tuple[Message, float]]] = {}
        self.held = 0

    def lane(self, msg: Message) -> Lane | None:
        """The message's lane; None when it is not ordered (``key`` mode, no key)."""
        topic, partition = str(msg.topic()), int(msg.partition() or 0)
        if self.mode == "partition":
            return topic, partition, None
        key = msg.key()
        return None if key is None else (topic, partition, key)

    def admit(self, messages: list[Message],
              already_final: Callable[[Message], bool]) -> list[Message]:
        """Of ``messages`` (in offset order), those that may be dispatched now; the others
        wait behind their lane's holder. A message known final takes no lane."""
        ready = []
        for msg in messages:
            lane = self.lane(msg)
            if lane is None or already_final(msg):
                ready.append(msg)
            elif lane in self._holder:
                self._waiting.setdefault(lane, deque()).append((msg, time.monotonic()))
                self.held += 1
            else:
                self._hold(lane, msg)
                ready.append(msg)
        return ready

    def busy(self, topic: str, partition: int) -> list[int]:
        """The offsets holding lanes of a partition (to ask Redis which are final now)."""
        return [o for (t, p, o) in self._lanes if t == topic and p == partition]

    def partitions(self) -> set[tuple[str, int]]:
        return {(t, p) for (t, p, _) in self._lanes}

    def release(self, topic: str, partition: int, offsets: Iterable[int]) -> list[Message]:
        """These offsets are final: free their lanes; returns the next message of each,
        which now holds the lane and may be dispatched."""
        ready = []
        for offset in offsets:
            lane = self._lanes.pop((topic, partition, offset), None)
            if lane is None:
                continue
            del self._holder[lane]
            queue = self._waiting.get(lane)
            if queue:
                msg, _ = queue.popleft()
                self.held -= 1
                if not queue:
                    del self._waiting[lane]
                self._hold(lane, msg)
                ready.append(msg)
        return ready

    def drop(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Forget lanes and waiting messages (of these partitions, or all): they are read
        again from the watermark (rewind, set_offset, revoke)."""
        def gone(lane: Lane) -> bool:
            return partitions is None or (lane[0], lane[1]) in partitions
        self._lanes = {k: v for k, v in self._lanes.items() if not gone(v)}
        self._holder = {k: v for k, v in self._holder.items() if not gone(k)}
        for lane in [lane for lane in self._waiting if gone(lane)]:
            self.held -= len(self._waiting.pop(lane))

    def oldest_wait(self) -> float | None:
        """Seconds the longest-waiting held message has waited; None when none waits."""
        starts = [queue[0][1] for queue in self._waiting.values() if queue]
        return time.monotonic() - min(starts) if starts else None

    def _hold(self, lane: Lane, msg: Message) -> None:
        offset = int(msg.offset() or 0)
        self._holder[lane] = offset
        self._lanes[(lane[0], lane[1], offset)] = lane
