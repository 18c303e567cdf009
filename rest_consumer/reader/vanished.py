"""Tasks that vanished between the broker and a worker: found within a minute, not after
``REDISPATCH_AFTER``.

Kombu's Redis transport takes a task off its queue (``BRPOP``) and only then records it as
unacknowledged, so a worker killed in between takes the task with it; a restore after the
visibility timeout also drops a task whose queue binding is gone (a Redis that lost its data,
before a worker declares the queue again). Nothing in Redis then holds the task, and its
messages used to wait for ``REDISPATCH_AFTER`` (300 s), which must stay above the longest
retry backoff: the 242 s "recoveries" of ``faults/run``'s mixed scenario, where a worker is
killed as the stream's next messages arrive.

A reader knows which task carried each offset it dispatched (``PartitionTracker.task_of``).
When a partition's oldest pending offset has not moved for ``after`` seconds (the visibility
timeout plus a margin: by then a reserved copy was restored and claimed), its task is looked
for: a run's claim (running or done), its queue, the broker's unacknowledged records (one
older than twice ``after`` is one kombu failed to restore, as when a worker killed while
holding kombu's restore lock stopped every restore for its 300 s; it is removed). A task
found nowhere was lost, and the partition is read again from its watermark (what is known
final is not sent again). A task once seen claimed is never suspected again, and none is
while a retry of the job waits: a retry's backoff may outlive its run's done mark.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from rest_consumer.core.messages import TopicPartitionKey
from rest_consumer.reader.tracking import Partitions
from rest_consumer.state import keys

log = logging.getLogger(__name__)

MARGIN_SECONDS = 15.0
"""Past the visibility timeout: time for a restored copy to be taken and claimed."""


class VanishedTasks:
    """One reader's look for the tasks of its stalled partitions."""

    def __init__(self, job_id: str, queue: str, visibility_timeout: float) -> None:
        self.job_id = job_id
        self.queue = queue
        self.after = visibility_timeout + MARGIN_SECONDS
        self.claimed: set[str] = set()

    def find(self, client: Any, partitions: Partitions) -> list[TopicPartitionKey]:
        """The stalled partitions whose oldest pending message's task is nowhere."""
        suspects = self._suspects(partitions)
        if not suspects:
            return []
        pipe = client.pipeline(transaction=False)
        for task in suspects.values():
            pipe.exists(keys.task_claim(task))
        pipe.llen(self.queue)
        *claims, waiting = pipe.execute()
        self.claimed.update(t for t, c in zip(suspects.values(), claims, strict=True) if c)
        unclaimed = {tp: t for tp, t in suspects.items() if t not in self.claimed}
        if not unclaimed or waiting:  # never run: it may be waiting in its queue
            return []
        if self._retry_waiting(client):  # a retry of it (its run's done mark is gone)
            return []
        held = client.hgetall(keys.KOMBU_UNACKED)
        lost = {tp: t for tp, t in unclaimed.items() if self._gone(client, held, t)}
        for (topic, partition), task in lost.items():
            log.warning("job %s: task %s, holding %s[%d] from offset %d, was never run and is "
                        "in no queue (taken by a worker that died, or dropped by a restore); "
                        "reading the partition again", self.job_id, task, topic, partition,
                        partitions[(topic, partition)].watermark)
        return list(lost)

    def _gone(self, client: Any, held: dict[bytes, bytes], task: str) -> bool:
        """Whether ``task`` is in no unacked record, or only in one kombu should have
        restored long ago: that record is removed here, the task counted lost."""
        tag = next((tag for tag, payload in held.items() if task.encode() in payload), None)
        if tag is None:
            return True
        reserved = client.zscore(keys.KOMBU_UNACKED_INDEX, tag)
        if reserved is None or time.time() - reserved < 2 * self.after:
            return False  # reserved: kombu restores it (after the visibility timeout)
        pipe = client.pipeline(transaction=True)
        pipe.hdel(keys.KOMBU_UNACKED, tag)
        pipe.zrem(keys.KOMBU_UNACKED_INDEX, tag)
        return bool(pipe.execute()[0])  # not restored or acked meanwhile: ours to send again

    def _retry_waiting(self, client: Any) -> bool:
        """Whether a retry of this job waits in the schedule (a task's done mark lives
        minutes, its retries' backoff may be longer)."""
        prefix = json.dumps({"j": self.job_id})[:-1] + ", "  # how ``Retry.encode`` begins
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        return any(True for _ in client.zscan_iter(keys.RETRIES, match=pattern, count=1000))

    def _suspects(self, partitions: Partitions) -> dict[TopicPartitionKey, str]:
        """Per partition stalled longer than ``after``: the task of its oldest pending
        offset, unless it was seen claimed (or is unknown: adopted, or held behind a line)."""
        oldest = {tp: tracker.task_of.get(tracker.pending[0])
                  for tp, tracker in partitions.items() if tracker.pending}
        self.claimed &= set(oldest.values())  # forget tasks no longer in the way
        return {tp: task for tp, task in oldest.items()
                if task is not None and task not in self.claimed
                and partitions[tp].stalled_for() >= self.after}
