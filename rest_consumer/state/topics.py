"""Kafka topics the service keeps for itself (jobs, dead letters): create, write, read back.

Writes are synchronous and durable (``acks=all``, idempotent): a caller learns whether Kafka
holds the record before it tells anyone else it is saved.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from rest_consumer.core.messages import offset_of

Record = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]
"""Key, value and headers of a record to write."""

TIMEOUT = 10.0
"""Seconds a write, a topic creation or a read may take before it counts as a failure."""


class TopicError(Exception):
    """Kafka did not confirm a write, or a read did not finish, in time."""


@dataclass(frozen=True)
class Refusal:
    """Why Kafka does not hold one record; ``retriable``: it may take it later (a timeout,
    no broker), as opposed to refusing this record as it is (too large, not allowed)."""

    reason: str
    retriable: bool


class DurableWriter:
    """A producer that waits for Kafka's acknowledgement of every write it is asked for."""

    def __init__(self, kafka_config: dict[str, Any]) -> None:
        self.kafka_config = kafka_config
        self._producer: Producer | None = None
        self._topics: set[str] = set()
        self._lock = threading.Lock()

    def ensure_topic(self, name: str, config: dict[str, str] | None = None) -> None:
        """Create ``name`` (one partition, the broker's replication) unless it exists."""
        if name in self._topics:
            return
        create_topic(self.kafka_config, name, config or {})
        self._topics.add(name)

    def write(self, topic: str, records: list[Record]) -> list[int]:
        """Write (key, value, headers) records in order; returns their offsets.

        Raises TopicError unless Kafka acknowledged every one of them.
        """
        results = self.write_each(topic, records)
        refused = [r for r in results if isinstance(r, Refusal)]
        if refused:
            raise TopicError(f"Kafka did not confirm the write to {topic}: {refused[0].reason}")
        return [r for r in results if isinstance(r, int)]

    def write_each(self, topic: str, records: list[Record]) -> list[int | Refusal]:
        """Write records in order; returns each one's offset, or why Kafka does not hold it.

        A full local queue (``BufferError``) waits for deliveries to drain, once, instead of
        escaping: a task with many large letters must not fail on it.
        """
        results: list[int | Refusal | None] = [None] * len(records)

        def delivered(position: int) -> Callable[[KafkaError | None, Message], None]:
            def report(err: KafkaError | None, msg: Message) -> None:
                results[position] = (offset_of(msg) if err is None
                                     else Refusal(str(err), bool(err.retriable())))
            return report

        with self._lock:
            producer = self._get_producer()
            for position, (key, value, headers) in enumerate(records):
                results[position] = _produce(producer, topic, (key, value, headers),
                                             delivered(position))
            producer.flush(TIMEOUT)
        return [Refusal("Kafka did not confirm in time", True) if r is None else r
                for r in results]

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({
                **self.kafka_config, "acks": "all", "enable.idempotence": True,
                "linger.ms": 0, "message.timeout.ms": int(TIMEOUT * 1000), "log_level": 3})
        return self._producer


def _produce(producer: Producer, topic: str, record: Record,
             report: Callable[[KafkaError | None, Message], None]) -> Refusal | None:
    """Queue one record; a Refusal when librdkafka will not even queue it."""
    key, value, headers = record
    for attempt in (1, 2):
        try:
            producer.produce(topic, value, key, headers=headers, on_delivery=report)
            return None
        except BufferError:
            if attempt == 2:
                return Refusal("the producer's local queue stayed full", True)
            producer.flush(TIMEOUT)
        except KafkaException as e:
            error = e.args[0]
            return Refusal(str(error), bool(error.retriable()))
    return None


def create_topic(kafka_config: dict[str, Any], name: str, config: dict[str, str]) -> None:
    """Create a one-partition topic with the broker's default replication; fine if it exists."""
    admin = AdminClient(kafka_config)
    topic = NewTopic(name, num_partitions=1, replication_factor=-1, config=config)
    try:
        admin.create_topics([topic], operation_timeout=TIMEOUT)[name].result(TIMEOUT)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def reader(kafka_config: dict[str, Any]) -> Consumer:
    """A consumer that reads by assignment only: it joins no group and commits nothing."""
    return Consumer({**kafka_config, "group.id": f"rest-consumer-reader-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     "log_level": 3})


def watermarks(consumer: Consumer, topic: str) -> tuple[int, int]:
    """(low, high) offsets of the topic's partition 0; (0, 0) when the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return 0, 0
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
    return int(low), int(high)


def read_range(consumer: Consumer, topic: str, start: int | None, end: int) -> Iterator[Message]:
    """The records of partition 0 from ``start`` (None: the beginning) up to ``end``."""
    if end <= (start or 0):
        return
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING if start is None else start)])
    while True:
        msg = consumer.poll(TIMEOUT)
        if msg is None:
            raise TopicError(f"reading {topic} timed out")
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(error)
        yield msg
        if offset_of(msg) >= end - 1:
            return
