"""What each partition of a job has out, and what of it is final, kept in Redis.

Two sorted sets per partition, scored by offset: ``out`` (dispatched by a reader) and
``done`` (final: delivered or dead-lettered, written by workers). Both keep an offset until a
commit covers it, so whoever owns the partition next (after a crash, a rebalance) adopts
what is still out instead of sending it again and skips what is already final. The reader
owning the partition reads ``done`` to advance its watermark at each commit, and in between
pops ``fresh`` (what workers made final since it last looked) to learn it within tens of
milliseconds: after a data loss, what it had learned is not sent again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_consumer.core.messages import TopicPartitionKey
from rest_consumer.state import keys


def read_left_behind(pipe: Any, job_id: str,
                     partitions: list[TopicPartitionKey]) -> list[tuple[set[int], set[int]]]:
    """For each partition: (offsets out and not final, offsets final), as its previous
    owner left them. ``pipe`` is executed here."""
    for topic, partition in partitions:
        pipe.zrange(keys.out(job_id, topic, partition), 0, -1)
        pipe.zrange(keys.done(job_id, topic, partition), 0, -1)
    replies = pipe.execute()
    left = []
    for out, done in zip(replies[::2], replies[1::2], strict=True):
        final = {int(o) for o in done}
        left.append(({int(o) for o in out} - final, final))
    return left


def record_sent(pipe: Any, job_id: str, sent: dict[TopicPartitionKey, list[int]]) -> None:
    """Queue: these offsets are out now."""
    for (topic, partition), offsets in sent.items():
        pipe.zadd(keys.out(job_id, topic, partition), {str(o): o for o in offsets})


FRESH_KEEP_MS = 60_000
"""A partition's ``fresh`` list outlives its last push by this much: its reader pops it every
few tens of milliseconds; one that stopped reading leaves nothing behind for long."""

FRESH_POP_MOST = 100_000


def queue_final(pipe: Any, job_id: str, tp: TopicPartitionKey, offsets: list[int]) -> None:
    """Queue: these offsets are final (``done``), and new to the partition's reader
    (``fresh``)."""
    if not offsets:
        return
    pipe.zadd(keys.done(job_id, *tp), {str(o): o for o in offsets})
    pipe.rpush(keys.fresh(job_id, *tp), *offsets)
    pipe.pexpire(keys.fresh(job_id, *tp), FRESH_KEEP_MS)


def queue_fresh_finals(pipe: Any, job_id: str, tp: TopicPartitionKey) -> None:
    """Queue a pop of the offsets made final since the last pop (a reply of None: none)."""
    pipe.lpop(keys.fresh(job_id, *tp), FRESH_POP_MOST)


def queue_finals_from(pipe: Any, job_id: str, tp: TopicPartitionKey, floor: int) -> None:
    """Queue a read of the partition's final offsets from ``floor`` up."""
    pipe.zrangebyscore(keys.done(job_id, *tp), floor, "+inf")


def queue_which_final(pipe: Any, job_id: str, tp: TopicPartitionKey, offsets: list[int]) -> None:
    """Queue a check of which of ``offsets`` are final (one score, or None, each)."""
    pipe.zmscore(keys.done(job_id, *tp), [str(o) for o in offsets])


def queue_final_check(pipe: Any, job_id: str, messages: list[tuple[str, int, int]]) -> None:
    """Queue a check of which (topic, partition, offset) are final: one ``ZMSCORE`` per
    partition, and the partitions' committed offsets (below them, everything is final);
    ``final_among`` reads the replies."""
    parts = _by_partition(messages)
    for tp, offsets in parts.items():
        queue_which_final(pipe, job_id, tp, offsets)
    if parts:
        pipe.hmget(keys.committed(job_id), [keys.committed_field(*tp) for tp in parts])


def final_among(messages: list[tuple[str, int, int]],
                replies: list[Any]) -> set[tuple[str, int, int]]:
    """The messages of ``queue_final_check`` that its replies say are final."""
    final: set[tuple[str, int, int]] = set()
    parts = _by_partition(messages)
    if not parts:
        return final
    committed = replies[len(parts)]
    for ((topic, partition), offsets), scores, mark in zip(
            parts.items(), replies[:len(parts)], committed, strict=True):
        below = int(mark) if mark is not None else -1
        final.update((topic, partition, o) for o, score in zip(offsets, scores, strict=True)
                     if score is not None or o < below)
    return final


def queue_committed(pipe: Any, job_id: str, tp: TopicPartitionKey, offset: int) -> None:
    """Queue: the partition's reader committed ``offset`` (everything below is final)."""
    pipe.hset(keys.committed(job_id), keys.committed_field(*tp), offset)


def forget_committed(client: Any, job_id: str, partitions: Iterable[TopicPartitionKey]) -> None:
    """A reader takes the partitions over, or moves them: their committed offsets say
    nothing until its own next commit."""
    fields = [keys.committed_field(*tp) for tp in partitions]
    if fields:
        client.hdel(keys.committed(job_id), *fields)


def _by_partition(messages: list[tuple[str, int, int]]) -> dict[TopicPartitionKey, list[int]]:
    by_partition: dict[TopicPartitionKey, list[int]] = {}
    for topic, partition, offset in messages:
        by_partition.setdefault((topic, partition), []).append(offset)
    return by_partition


def queue_trim(pipe: Any, job_id: str, tp: TopicPartitionKey, committed: int) -> None:
    """Queue: a commit covers everything below ``committed``."""
    for name in (keys.done(job_id, *tp), keys.out(job_id, *tp), keys.lettered(job_id, *tp)):
        pipe.zremrangebyscore(name, "-inf", f"({committed}")


def forget(client: Any, job_id: str, partitions: Iterable[TopicPartitionKey],
           final_too: bool = False) -> None:
    """What is out will be dispatched again by this reader: no next owner may adopt it (a
    stale entry would make it wait for a task that no longer exists). With ``final_too``
    (set_offset), what was final is to be sent again as well."""
    names = []
    for topic, partition in partitions:
        names.append(keys.out(job_id, topic, partition))
        if final_too:
            names += [keys.done(job_id, topic, partition), keys.fresh(job_id, topic, partition)]
    if names:
        client.delete(*names)
