"""Who changed what: one record per change made through the API, in ``<prefix>.audit``.

The topic is append-only (Kafka's retention, not compaction): key = the job id or
``user:<name>``, value = JSON ``{time, who, role, action, method, path, from, job, user,
status, document}``, where ``document`` is the job as it is after the change (secrets
``***``) or the user without hashes. Without Kafka (unit tests) the records stay in memory.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any

from rest_consumer.state.topics import DurableWriter, read_range, reader, watermarks

log = logging.getLogger(__name__)

MAX_READ = 100_000
"""The newest records ``read`` looks through at most."""


def topic_name(prefix: str) -> str:
    return f"{prefix}.audit"


class AuditLog:
    """Writes audit records and reads them back, newest first."""

    def __init__(self, kafka_config: dict[str, Any] | None, prefix: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic_name(prefix)
        self._writer = DurableWriter(kafka_config) if kafka_config is not None else None
        self._memory: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Raises ``TopicError`` (or ``KafkaException``) unless Kafka holds the record."""
        if self._writer is None:
            with self._lock:
                self._memory.append(record)
            return
        key = record.get("job") or f"user:{record.get('user')}"
        self._writer.ensure_topic(self.topic)
        self._writer.write(self.topic, [(str(key).encode(),
                                         json.dumps(record, sort_keys=True).encode(), [])])

    def read(self, job: str | None = None, user: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` records (of one job, or one user), newest first."""
        def wanted(record: dict[str, Any]) -> bool:
            return ((job is None or record.get("job") == job)
                    and (user is None or record.get("user") == user))

        if self.kafka_config is None:
            with self._lock:
                return [r for r in reversed(self._memory) if wanted(r)][:limit]
        found: deque[dict[str, Any]] = deque(maxlen=limit)
        consumer = reader(self.kafka_config)
        try:
            low, high = watermarks(consumer, self.topic)
            for msg in read_range(consumer, self.topic, max(low, high - MAX_READ), high):
                try:
                    record = json.loads(msg.value() or b"")
                except ValueError:
                    continue
                if isinstance(record, dict) and wanted(record):
                    found.append(record)
        finally:
            consumer.close()
        return list(reversed(found))
