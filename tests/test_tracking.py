"""The watermark: only what is final below it."""

from __future__ import annotations

from rest_consumer.reader.tracking import PartitionTracker


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


def test_offsets_the_previous_owner_dispatched_are_adopted_not_sent_again() -> None:
    tracker = PartitionTracker()
    tracker.adopted = {10, 11}
    assert [tracker.needs_sending(o) for o in (10, 11, 12)] == [False, False, True]
    for offset in (10, 11, 12):
        tracker.dispatched(offset)
    assert list(tracker.pending) == [10, 11, 12] and not tracker.adopted
    tracker.finished([10, 11])
    tracker.advance()
    assert tracker.watermark == 12


def test_a_rewind_adopts_nothing() -> None:
    tracker = PartitionTracker()
    tracker.adopted = {41}
    tracker.dispatched(40)
    tracker.rewind()
    assert tracker.needs_sending(41)


def test_after_a_rewind_what_was_final_is_not_sent_again() -> None:
    tracker = PartitionTracker()
    for offset in range(5):
        tracker.dispatched(offset)
    tracker.finished([1, 3, 4])
    tracker.advance()
    assert tracker.rewind() == 0  # offset 0 is still out: re-read from there
    sent = [offset for offset in range(5) if tracker.needs_sending(offset)]
    assert sent == [0, 2]
    for offset in range(5):  # read again in order: all are tracked, the final ones as final
        tracker.dispatched(offset)
    tracker.finished([0, 2])
    tracker.advance()
    assert tracker.watermark == 5


def test_set_offset_sends_everything_again() -> None:
    tracker = PartitionTracker()
    tracker.dispatched(0)
    tracker.dispatched(1)
    tracker.finished([1])
    tracker.rewind(keep_final=False)
    assert tracker.needs_sending(1)


def test_after_a_restart_with_its_data_only_what_redis_no_longer_lists_is_sent_again() -> None:
    # Given offsets 0-7 out, 1 seen final by the reader; Redis comes back from its AOF listing
    # 0, 2, 3 and 4 as out and 5 as final: 6 and 7 were sent in its last, unwritten second
    tracker = PartitionTracker()
    for offset in range(8):
        tracker.dispatched(offset)
    tracker.finished([1])
    again = tracker.resume(out={0, 2, 3, 4}, final={5})
    # Then it reads again from 0, sends only 6 and 7, and waits for the others' tasks
    assert again == 2 and tracker.watermark == 0
    assert [o for o in range(8) if tracker.needs_sending(o)] == [6, 7]
    for offset in range(8):
        tracker.dispatched(offset)
    tracker.finished([0, 2, 3, 4, 6, 7])
    tracker.advance()
    assert tracker.watermark == 8
