"""The watermark: only what is final below it."""

from __future__ import annotations

from rest_consumer.tracking import PartitionTracker


def test_the_watermark_waits_for_the_oldest_unfinished_offset() -> None:
    tracker = PartitionTracker()
    for offset in (5, 6, 7, 9):
        tracker.dispatched(offset)
    tracker.finished([6, 7, 9])
    tracker.advance()
    assert tracker.watermark == 5
    tracker.finished([5])
    tracker.advance()
    assert tracker.watermark == 10 and not tracker.pending


def test_stale_outcomes_below_the_floor_are_ignored() -> None:
    tracker = PartitionTracker()
    tracker.dispatched(10)
    tracker.finished([3, 4])
    tracker.advance()
    assert tracker.watermark == 10 and tracker.done == set()


def test_rewind_returns_the_watermark_and_forgets_what_is_out() -> None:
    tracker = PartitionTracker()
    for offset in range(3):
        tracker.dispatched(offset)
    tracker.finished([0])
    tracker.advance()
    assert tracker.rewind() == 1
    assert not tracker.pending and tracker.watermark == 1
    assert tracker.stalled_for() == 0
