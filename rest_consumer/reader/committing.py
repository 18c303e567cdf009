"""A reader's commits: which offsets are final (Redis), the watermarks to commit (Kafka), and
what the commits let Redis forget."""

from __future__ import annotations

from typing import Any

import redis
from confluent_kafka import Consumer, Message, TopicPartition

from rest_consumer.core.messages import TopicPartitionKey
from rest_consumer.reader.ordering import OrderGate
from rest_consumer.reader.tracking import Partitions
from rest_consumer.state import heldbehind, outstanding


class Committer:
    """Collects the final offsets of one job's partitions and commits their watermarks."""

    def __init__(self, job_id: str, client: redis.Redis, partitions: Partitions,
                 gate: OrderGate | None) -> None:
        self.job_id = job_id
        self.redis = client
        self.partitions = partitions
        self.gate = gate

    def collect_and_commit(self, consumer: Consumer | None,
                           keys: list[TopicPartitionKey]) -> list[Message]:
        """Read the final offsets above each partition's oldest pending one, commit the new
        watermarks, then trim what the commits cover. Returns the messages (ordered jobs)
        whose line the final offsets freed, to send now."""
        keys = [k for k in keys if k in self.partitions]
        released = self._collect([k for k in keys if self.partitions[k].pending])
        offsets = [TopicPartition(topic, partition, mark) for topic, partition in keys
                   if (mark := self.partitions[(topic, partition)].watermark) is not None
                   and mark != self.partitions[(topic, partition)].committed]
        if offsets and consumer is not None:
            consumer.commit(offsets=offsets, asynchronous=False)
            pipe = self.redis.pipeline(transaction=False)
            for tp in offsets:
                self.partitions[(tp.topic, tp.partition)].committed = tp.offset
                outstanding.queue_committed(pipe, self.job_id, (tp.topic, tp.partition),
                                            tp.offset)
                outstanding.queue_trim(pipe, self.job_id, (tp.topic, tp.partition), tp.offset)
            pipe.execute()
        return released

    def collect_fresh(self, keys: list[TopicPartitionKey]) -> list[Message]:
        """Between commits: the offsets made final since the last look (no commit). Returns
        the messages (ordered jobs) whose line they freed, to send now."""
        waiting = [k for k in keys if k in self.partitions and self.partitions[k].pending]
        return self._collect(waiting, fresh=True)

    def _collect(self, waiting: list[TopicPartitionKey], fresh: bool = False) -> list[Message]:
        if not waiting:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in waiting:
            if fresh:
                outstanding.queue_fresh_finals(pipe, self.job_id, key)
            else:
                outstanding.queue_finals_from(pipe, self.job_id, key,
                                              self.partitions[key].pending[0])
        released: list[Message] = []
        for key, done in zip(waiting, pipe.execute(), strict=True):
            final = [int(o) for o in done or ()]
            self.partitions[key].finished(final)
            self.partitions[key].advance()
            if self.gate is not None:  # before the commit trims them from Redis
                released += self.gate.release(key[0], key[1], final)
        # Lines freed here: which holders were dead-lettered is asked before the commit trims
        # the lettered marks (rare: the reader's 5 ms check frees almost every line first).
        if self.gate is not None and (behind := self.gate.take_behind()):
            heldbehind.note(self.redis, self.job_id, behind)
        return released

    def report(self, consumer: Consumer | None) -> dict[str, dict[str, Any]]:
        """Per partition: committed watermark, high watermark (as last fetched: no broker
        call) and lag."""
        report = {}
        for (topic, partition), tracker in self.partitions.items():
            low = high = None
            if consumer is not None:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           cached=True)
            mark = tracker.committed
            # Nothing committed yet: behind by all the partition holds (0 when it is empty),
            # as the API's status counts it.
            start = mark if mark is not None else low
            lag = (high - start if high is not None and high >= 0
                   and start is not None and start >= 0 else None)
            report[f"{topic}[{partition}]"] = {"topic": topic, "partition": partition,
                                               "committed": mark, "high": high, "lag": lag}
        return report
