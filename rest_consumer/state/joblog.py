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

from rest_consumer.state.topics import DurableWriter, read_range, reader, watermarks

log = logging.getLogger(__name__)

TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def topic_name(prefix: str) -> str:
    return f"{prefix}.jobs"


class KeyedLog:
    """A compacted topic of JSON objects keyed by their ``id_field``: writes each change,
    reads the newest version of each back (the jobs here, the API's users in ``users``)."""

    def __init__(self, kafka_config: dict[str, Any], topic: str, id_field: str = "id") -> None:
        self.kafka_config = kafka_config
        self.topic = topic
        self.id_field = id_field
        self._writer = DurableWriter(kafka_config)

    def put(self, record: dict[str, Any]) -> None:
        """Raises ``TopicError`` unless Kafka holds the record."""
        self._write(record[self.id_field], json.dumps(record, sort_keys=True).encode())

    def tombstone(self, record_id: str) -> None:
        self._write(record_id, None)

    def _write(self, record_id: str, value: bytes | None) -> None:
        self._writer.ensure_topic(self.topic, TOPIC_CONFIG)
        self._writer.write(self.topic, [(record_id.encode(), value, [])])

    def read(self) -> dict[str, dict[str, Any]]:
        """The newest version of every record not deleted, by id."""
        consumer = reader(self.kafka_config)
        try:
            _, high = watermarks(consumer, self.topic)
            found: dict[str, dict[str, Any]] = {}
            for msg in read_range(consumer, self.topic, None, high):
                record_id = (msg.key() or b"").decode("utf-8", "replace")
                value = msg.value()
                if value is None:
                    found.pop(record_id, None)
                elif (record := _parsed(value, self.id_field, record_id)) is not None:
                    found[record_id] = record
                else:
                    log.error("%s holds a record at offset %s that is not an object keyed by "
                              "its %s; skipped", self.topic, msg.offset(), self.id_field)
            return found
        finally:
            consumer.close()


class JobLog(KeyedLog):
    """The jobs topic, ``<prefix>.jobs``."""

    def __init__(self, kafka_config: dict[str, Any], prefix: str) -> None:
        super().__init__(kafka_config, topic_name(prefix))


def _parsed(value: bytes, id_field: str, record_id: str) -> dict[str, Any] | None:
    """The object a record holds, or None when it is not a JSON object with the key's id."""
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get(id_field) == record_id else None
