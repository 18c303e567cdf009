"""Moving a reader's partitions: back to the watermark when Redis lost what was out, back to
the first message not dispatched when the broker refused tasks, and where ``set_offset`` asks."""

from __future__ import annotations

import logging

import redis
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from rest_consumer.core.messages import TopicPartitionKey, offset_of, partition_of
from rest_consumer.reader.batching import AdaptiveBatcher
from rest_consumer.reader.ordering import OrderGate
from rest_consumer.reader.tracking import Partitions, PartitionTracker
from rest_consumer.state import outstanding, seeks
from rest_consumer.state.offsets import resolve

log = logging.getLogger(__name__)


class SeekDeferred(Exception):
    """Raised when a ``set_offset`` request cannot be applied yet: try it on the next loop."""


class Positions:
    """Where one job's partitions read next, and what moving them forgets."""

    def __init__(self, job_id: str, client: redis.Redis, partitions: Partitions,
                 batcher: AdaptiveBatcher, gate: OrderGate | None) -> None:
        self.job_id = job_id
        self.redis = client
        self.partitions = partitions
        self.batcher = batcher
        self.gate = gate

    def rewind(self, consumer: Consumer, keys: list[TopicPartitionKey]) -> None:
        """Forget what is out on ``keys`` and read again from their watermarks; what was
        known final stays so (not sent again)."""
        outstanding.forget(self.redis, self.job_id, keys)
        self._drop_held(set(keys))
        for key in keys:
            target = self.partitions[key].rewind()
            if target is not None:
                log.warning("job %s: re-dispatching %s[%d] from offset %d", self.job_id,
                            key[0], key[1], target)
                consumer.seek(TopicPartition(key[0], key[1], target))

    def resume_after_restart(self, consumer: Consumer, keys: list[TopicPartitionKey]) -> None:
        """Redis restarted with its data, less what it had not written to disk: read again
        from the watermarks, sending only what Redis no longer lists as out (its task may be
        gone) nor as final; what it lists as out is adopted (its task is queued, or in a
        worker), what it lists as final is final."""
        self._drop_held(set(keys))
        left = outstanding.read_left_behind(self.redis.pipeline(transaction=False),
                                            self.job_id, keys)
        for key, (out, final) in zip(keys, left, strict=True):
            tracker = self.partitions[key]
            again = tracker.resume(out, final)
            target = tracker.watermark
            if target is not None:
                log.warning("job %s: Redis restarted; %s[%d] re-read from offset %d, %d "
                            "message(s) to send again (no longer listed in Redis)",
                            self.job_id, key[0], key[1], target, again)
                consumer.seek(TopicPartition(key[0], key[1], target))

    def undo(self, consumer: Consumer, undelivered: list[Message]) -> None:
        """Seek each partition back to its first message not dispatched (ordered jobs: back
        to the watermark, since their lines are rebuilt from there)."""
        if self.gate is not None:
            self.rewind(consumer, sorted({partition_of(m) for m in undelivered}
                                         & set(self.partitions)))
            return
        firsts: dict[TopicPartitionKey, int] = {}
        for msg in undelivered:
            firsts.setdefault(partition_of(msg), offset_of(msg))
        for (topic, partition), offset in firsts.items():
            consumer.seek(TopicPartition(topic, partition, offset))

    def apply_seek_request(self, consumer: Consumer) -> None:
        """set_offset: move the assigned partitions the request still waits for, forget what
        is out for them, commit at once, and mark them applied (``seeks``). Raises
        ``SeekDeferred`` when a partition is not fetching yet."""
        request = seeks.current(self.redis, self.job_id)
        waiting = set(seeks.pending(self.redis, self.job_id, request)) if request else set()
        mine = [tp for tp in consumer.assignment()
                if seeks.partition_name(tp.topic, tp.partition) in waiting]
        if request is None or not mine:
            return
        moved = []
        for tp in mine:
            target = resolve(consumer, tp, request.offset)
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, target))
            except KafkaException as e:
                raise SeekDeferred(str(e)) from e
            moved.append(TopicPartition(tp.topic, tp.partition, target))
        keys = [(tp.topic, tp.partition) for tp in moved]
        outstanding.forget(self.redis, self.job_id, keys, final_too=True)
        outstanding.forget_committed(self.redis, self.job_id, keys)
        self._drop_held(set(keys))
        for tp in moved:
            tracker = self.partitions.setdefault((tp.topic, tp.partition), PartitionTracker())
            tracker.rewind(keep_final=False)
            tracker.high = tracker.committed = tp.offset
        consumer.commit(offsets=moved, asynchronous=False)
        seeks.mark_applied(self.redis, self.job_id, request.generation,
                           [seeks.partition_name(tp.topic, tp.partition) for tp in moved])
        log.info("job %s: set_offset %s (generation %d) -> %s", self.job_id, request.offset,
                 request.generation,
                 ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in moved))

    def _drop_held(self, keys: set[TopicPartitionKey]) -> None:
        self.batcher.drop(keys)
        if self.gate is not None:
            self.gate.drop(keys)
