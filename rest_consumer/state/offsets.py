"""Kafka offsets of a job's consumer group: read them for status, set them for set_offset."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from rest_consumer.core import sources
from rest_consumer.core.config import Settings
from rest_consumer.core.jobs import Job

TIMEOUT = 5.0


def group_id(settings: Settings, job_id: str) -> str:
    return f"{settings.consumer_group_prefix}.{job_id}"


def _consumer(settings: Settings, job_id: str) -> Consumer:
    """A consumer of the job's group used only for queries: it never subscribes or commits."""
    return Consumer({**settings.kafka_client_config(), "group.id": group_id(settings, job_id),
                     "enable.auto.commit": False, "log_level": 0})


def job_partitions(consumer: Consumer, job: Job, prefix: str) -> list[TopicPartition]:
    """Every partition of the job's topics, regexes matched now as the readers match them."""
    topics = consumer.list_topics(timeout=TIMEOUT).topics
    names = [name for name in sources.resolve(job["topic"], topics, prefix) if name in topics]
    return [TopicPartition(name, p) for name in names for p in sorted(topics[name].partitions)]


def partition_names(settings: Settings, job: Job) -> list[str]:
    """``topic[n]`` of every partition of the job now."""
    consumer = _consumer(settings, job["id"])
    try:
        partitions = job_partitions(consumer, job, settings.consumer_group_prefix)
        return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
    finally:
        consumer.close()


def partition_status(settings: Settings, job: Job) -> list[dict[str, Any]]:
    """Committed offset, high watermark and lag of every partition of the job."""
    consumer = _consumer(settings, job["id"])
    try:
        partitions = job_partitions(consumer, job, settings.consumer_group_prefix)
        committed = consumer.committed(partitions, timeout=TIMEOUT) if partitions else []
        rows = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
            offset = tp.offset if tp.offset >= 0 else None
            rows.append({"topic": tp.topic, "partition": tp.partition, "committed": offset,
                         "low_watermark": low, "high_watermark": high,
                         "lag": high - (offset if offset is not None else low)})
        return rows
    finally:
        consumer.close()


def resolve(consumer: Consumer, tp: TopicPartition, offset: int | str) -> int:
    """An integer, ``earliest`` or ``latest`` as an offset within the partition's range."""
    low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
    if offset == "earliest":
        return int(low)
    if offset == "latest":
        return int(high)
    return min(max(int(offset), low), high)


def alter_group_offsets(settings: Settings, job: Job, offset: int | str) -> list[dict[str, Any]]:
    """Set the (inactive) group's offsets directly; Kafka refuses while members are active."""
    consumer = _consumer(settings, job["id"])
    try:
        targets = [TopicPartition(tp.topic, tp.partition, resolve(consumer, tp, offset))
                   for tp in job_partitions(consumer, job, settings.consumer_group_prefix)]
    finally:
        consumer.close()
    if not targets:
        return []
    admin = AdminClient(settings.kafka_client_config())
    request = ConsumerGroupTopicPartitions(group_id(settings, job["id"]), targets)
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(TIMEOUT * 2)
    return [{"topic": tp.topic, "partition": tp.partition, "offset": tp.offset} for tp in targets]

