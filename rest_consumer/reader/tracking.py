"""Per-partition bookkeeping of a reader: which offsets are out, which are final, and the
watermark below which everything is final (the only offset ever committed)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from confluent_kafka import Message

from rest_consumer.core.messages import TopicPartitionKey, offset_of, partition_of


class PartitionTracker:
    """Offsets dispatched in increasing order; final ones collected from Redis."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.high: int | None = None
        self.committed: int | None = None
        self.last_progress = time.monotonic()
        self.adopted: set[int] = set()
        """Offsets the partition's previous owner dispatched that are still out (their tasks
        queued, running or waiting to retry): wait for them, do not send them again."""
        self.known_final: set[int] = set()
        """Offsets above the watermark known final (before a rewind, or by the previous
        owner): not sent again."""
        self.task_of: dict[int, str] = {}
        """The task that carried each pending offset this reader sent (``vanished``)."""

    def dispatched(self, offset: int) -> None:
        """``offset`` is out (sent now, or still out from the previous owner), or was final
        before a rewind (then it is final again at once). Offsets come in increasing order."""
        if not self.pending:
            self.last_progress = time.monotonic()
        self.pending.append(offset)
        self.high = offset + 1
        if offset in self.known_final:
            self.known_final.discard(offset)
            self.done.add(offset)
        self.adopted.discard(offset)

    def needs_sending(self, offset: int) -> bool:
        """False for an offset final before a rewind, or still out from the previous owner."""
        return offset not in self.known_final and offset not in self.adopted

    def finished(self, offsets: Iterable[int]) -> None:
        floor = self.pending[0] if self.pending else None
        self.done.update(o for o in offsets if floor is not None and o >= floor)

    def advance(self) -> None:
        """Drop the leading offsets that are final."""
        moved = False
        while self.pending and self.pending[0] in self.done:
            offset = self.pending.popleft()
            self.done.discard(offset)
            self.task_of.pop(offset, None)
            moved = True
        if moved:
            self.last_progress = time.monotonic()
            if not self.pending:
                self.done.clear()

    @property
    def watermark(self) -> int | None:
        """The offset to commit: the first not final, or one past the last dispatched."""
        return self.pending[0] if self.pending else self.high

    def stalled_for(self) -> float:
        """Seconds the oldest pending offset has waited without progress (0 when none)."""
        return time.monotonic() - self.last_progress if self.pending else 0.0

    def rewind(self, keep_final: bool = True) -> int | None:
        """Forget what is out (it will be dispatched again); return where to seek.

        What is known final stays so (``needs_sending``) unless ``keep_final`` is False (set_offset:
        the operator asked for everything again).
        """
        target = self.watermark
        self.known_final = set(self.done) if keep_final else set()
        self.pending.clear()
        self.done.clear()
        self.task_of.clear()
        self.adopted = set()
        self.high = target
        self.last_progress = time.monotonic()
        return target


    def resume(self, out: set[int], final: set[int]) -> int:
        """Redis restarted with its data (``out``: offsets it lists as out and not final;
        ``final``): forget what is pending, as ``rewind`` does, but adopt what is still out
        and take what is final as final. Returns how many pending offsets will be sent again
        (those Redis no longer lists: lost with its last writes)."""
        pending = set(self.pending)
        adopted = (pending & out) - self.done - final
        known_final = set(self.done) | (pending & final)
        self.rewind()
        self.adopted, self.known_final = adopted, known_final
        return len(pending - adopted - known_final)


class Partitions(dict[TopicPartitionKey, PartitionTracker]):
    """The partitions a reader holds, each with its tracker."""

    def of(self, msg: Message) -> PartitionTracker | None:
        return self.get(partition_of(msg))

    def known_final(self, msg: Message) -> bool:
        """Final before a rewind, or by the partition's previous owner: not sent again."""
        tracker = self.of(msg)
        return tracker is not None and offset_of(msg) in tracker.known_final

    def needs_sending(self, msg: Message) -> bool:
        tracker = self.of(msg)
        return tracker is None or tracker.needs_sending(offset_of(msg))

    def track(self, messages: Iterable[Message]) -> None:
        """``messages`` (in offset order per partition) are out, or waiting behind a line."""
        for msg in messages:
            self.setdefault(partition_of(msg), PartitionTracker()).dispatched(offset_of(msg))

    def carried(self, tasks: dict[str, list[Message]]) -> None:
        """Which task carried each of these (dispatched) messages."""
        for task, messages in tasks.items():
            for msg in messages:
                if (tracker := self.of(msg)) is not None:
                    tracker.task_of[offset_of(msg)] = task

    def in_flight(self) -> int:
        """Offsets out and not yet final, over every partition."""
        return sum(len(t.pending) for t in self.values())
