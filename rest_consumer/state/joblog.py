"""Every job in a compacted Kafka topic, ``<CONSUMER_GROUP_PREFIX>.jobs``.

Kafka Connect keeps connector configurations the same way: keyed by id, the newest record
wins, a tombstone deletes. Redis keeps a copy for speed; when Redis loses its data the copy
is rebuilt from here (``JobStore.ensure_loaded``). The records hold the jobs' credentials,
as Redis does: protect the topic with ACLs as you would Connect's config topic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rest_consumer.core.jobs import Job
from rest_consumer.state.topics import DurableWriter, read_range, reader, watermarks

log = logging.getLogger(__name__)

TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def topic_name(prefix: str) -> str:
    return f"{prefix}.jobs"


class JobLog:
    """Writes job changes to the jobs topic and reads the newest version of each back."""

    def __init__(self, kafka_config: dict[str, Any], prefix: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic_name(prefix)
        self._writer = DurableWriter(kafka_config)

    def put(self, job: Job) -> None:
        """Raises ``TopicError`` unless Kafka holds the job."""
        self._write(job["id"], json.dumps(job, sort_keys=True).encode())

    def tombstone(self, job_id: str) -> None:
        self._write(job_id, None)

    def _write(self, job_id: str, value: bytes | None) -> None:
        self._writer.ensure_topic(self.topic, TOPIC_CONFIG)
        self._writer.write(self.topic, [(job_id.encode(), value, [])])

    def read(self) -> dict[str, Job]:
        """The newest version of every job not deleted, by id."""
        consumer = reader(self.kafka_config)
        try:
            _, high = watermarks(consumer, self.topic)
            found: dict[str, Job] = {}
            for msg in read_range(consumer, self.topic, None, high):
                job_id = (msg.key() or b"").decode("utf-8", "replace")
                value = msg.value()
                if value is None:
                    found.pop(job_id, None)
                elif (job := _parsed(value, job_id)) is not None:
                    found[job_id] = job
                else:
                    log.error("the jobs topic holds a record at offset %s that is not a job "
                              "keyed by its id; skipped", msg.offset())
            return found
        finally:
            consumer.close()


def _parsed(value: bytes, job_id: str) -> Job | None:
    """The job a record holds, or None when it is not a JSON object with the key's id."""
    try:
        job = json.loads(value)
    except ValueError:
        return None
    return job if isinstance(job, dict) and job.get("id") == job_id else None
