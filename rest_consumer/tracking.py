"""Per-partition bookkeeping of a reader: which offsets are out, which are final, and the
watermark below which everything is final (the only offset ever committed)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable


class PartitionTracker:
    """Offsets dispatched in increasing order; final ones collected from Redis."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.high: int | None = None
        self.committed: int | None = None
        self.last_progress = time.monotonic()
        self.adopt_until: int | None = None
        """Offsets below this were dispatched by the partition's previous owner and are still
        out (their tasks queued, running or waiting to retry): wait for them, do not send
        them again."""

    def adopts(self, offset: int) -> bool:
        """Whether ``offset`` is the previous owner's, still out; records it as pending."""
        if self.adopt_until is None or offset >= self.adopt_until:
            self.adopt_until = None
            return False
        self.dispatched(offset)
        return True

    def dispatched(self, offset: int) -> None:
        if not self.pending:
            self.last_progress = time.monotonic()
        self.pending.append(offset)
        self.high = offset + 1

    def finished(self, offsets: Iterable[int]) -> None:
        floor = self.pending[0] if self.pending else None
        self.done.update(o for o in offsets if floor is not None and o >= floor)

    def advance(self) -> None:
        """Drop the leading offsets that are final."""
        moved = False
        while self.pending and self.pending[0] in self.done:
            self.done.discard(self.pending.popleft())
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

    def rewind(self) -> int | None:
        """Forget what is out (it will be dispatched again); return where to seek."""
        target = self.watermark
        self.pending.clear()
        self.done.clear()
        self.adopt_until = None
        self.high = target
        self.last_progress = time.monotonic()
        return target
