"""``max_in_flight``: a job's readers stop fetching while that many messages are out.

A reader pauses its partitions as soon as the job's messages in flight (its own count, plus
what the job's other readers last reported) pass the limit, and resumes once they are below
half of it. Its own count changes only when it takes messages or learns which are final
(every ``COLLECT_SECONDS``), so both are checked on every turn of the loop, not at the 1 s
tick: a job that reaches its limit because its workers are the bottleneck (a fast source, a
fast endpoint) used to leave its workers idle for up to a second a time, waiting for the
tick to resume (the batched benchmark lost half its throughput to it).

Pausing drops what the consumer had prefetched, and resuming without a seek goes on after the
last message the reader *took*, so resuming seeks each partition back to its first offset not
yet dispatched, and what the reader took and holds for a batch (``batching``) is dispatched
first, at both turns. It used to be dropped at the pause instead: a partition that had
dispatched nothing yet was then not sought back, and the messages held were skipped (and
committed past). The seek comes after ``resume``, not before: librdkafka (2.x) often fetched
nothing for a whole second after a seek made while the partition was paused (4 of 5 cycles on
loopback), where a seek just after the resume had the next message within about 10 ms (18 of
20 cycles; 0.2 s in the others). The seek's version barrier drops whatever the resumed fetch
brought before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from rest_consumer.reader.tracking import Partitions

log = logging.getLogger(__name__)


class Backpressure:
    """Whether a reader's partitions are paused, and when to pause or resume them."""

    def __init__(self, job_id: str, limit: int, partitions: Partitions) -> None:
        self.job_id = job_id
        self.limit = limit
        self.partitions = partitions
        self.paused = False
        self.others = 0
        """Messages in flight for the job's other readers, as their heartbeats last said."""

    def check(self, consumer: Consumer, send_held: Callable[[Consumer], None]) -> None:
        """Pause over the limit, resume below half of it; otherwise nothing (no I/O).
        ``send_held`` dispatches what the reader holds, before either."""
        in_flight = self.partitions.in_flight() + self.others
        if not self.paused and in_flight > self.limit:
            send_held(consumer)
            self.paused = True
            consumer.pause(consumer.assignment())
            log.warning("job %s: %d messages in flight (limit %d); pausing", self.job_id,
                        in_flight, self.limit)
        elif self.paused and in_flight < self.limit / 2:
            send_held(consumer)
            self.paused = False
            assigned = consumer.assignment()
            consumer.resume(assigned)
            for tp in assigned:
                tracker = self.partitions.get((tp.topic, tp.partition))
                if tracker is not None and tracker.high is not None:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, tracker.high))
            log.info("job %s: %d in flight; resuming", self.job_id, in_flight)
