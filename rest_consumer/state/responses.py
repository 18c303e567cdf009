"""The answers a job's endpoint gave: one Kafka topic per job, ``<prefix>.responses.<job id>``.

A job with ``responses: all`` (or ``errors``) writes one record per final outcome (every
delivered record and dead letter, or only dead letters): key = the source message's key,
value = the answer's body (for a batch, the record's own item where ``item_results`` finds
one), cut to ``RESPONSE_MAX_BYTES``, and headers ``__rest_consumer.*`` saying what it
answers (status, outcome, source topic/partition/offset/index, record id, attempts,
latency, URL without secrets). Like a dead letter, a record is final only once Kafka holds
its response; a response Kafka has not taken travels with its message (``to_args``) so the
next run writes it without sending the record again.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from rest_consumer.core.messages import TaskMessage
from rest_consumer.state.deadletters import PREFIX
from rest_consumer.state.topics import DurableWriter, Record, Refusal

ResponseOutcome = Literal["delivered", "dead_letter"]


def topic_name(prefix: str, job_id: str) -> str:
    return f"{prefix}.responses.{job_id}"


@dataclass(frozen=True)
class Response:
    """What one record's endpoint answered, and where the record came from."""

    index: int | None
    """The record; None for a message that failed whole (it could not be decoded)."""
    outcome: ResponseOutcome
    status: int | None = None
    body: bytes = b""
    attempts: int = 0
    latency_ms: float | None = None
    url: str | None = None
    record_id: Any = None
    reason: str = ""
    """Why it is a dead letter (empty when delivered)."""

    def to_record(self, message: TaskMessage, max_bytes: int) -> Record:
        """Key, value and headers; a body over ``max_bytes`` is cut, and the headers
        ``truncated`` and ``value_size`` say so."""
        ours: dict[str, Any] = {
            "status": self.status, "outcome": self.outcome, "topic": message.topic,
            "partition": message.partition, "offset": message.offset, "index": self.index,
            "record_id": None if self.record_id is None else json.dumps(self.record_id,
                                                                        default=str),
            "attempts": self.attempts,
            "latency_ms": None if self.latency_ms is None else f"{self.latency_ms:.1f}",
            "url": self.url, "reason": self.reason or None}
        value = self.body
        if len(value) > max_bytes:
            ours.update(truncated="value", value_size=len(value))
            value = value[:max_bytes]
        headers: list[tuple[str, str | bytes | None]] = [
            (PREFIX + name, str(v).encode()) for name, v in ours.items() if v is not None]
        return message.key, value, headers

    def to_args(self) -> dict[str, Any]:
        """JSON-safe, to travel with its message (``TaskMessage.responses``)."""
        return {"i": self.index, "o": self.outcome, "s": self.status,
                "b": base64.b64encode(self.body).decode(), "a": self.attempts,
                "l": self.latency_ms, "u": self.url, "id": self.record_id, "r": self.reason}

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Response:
        outcome: ResponseOutcome = "dead_letter" if args.get("o") == "dead_letter" else (
            "delivered")
        return cls(args.get("i"), outcome, args.get("s"),
                   base64.b64decode(args.get("b") or ""), int(args.get("a") or 0),
                   args.get("l"), args.get("u"), args.get("id"), str(args.get("r") or ""))


class ResponseWriter:
    """What a worker uses: append a task's responses, learn which Kafka took."""

    def __init__(self, kafka_config: dict[str, Any], prefix: str, max_bytes: int) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes
        self._writer = DurableWriter(kafka_config)

    def write(self, job_id: str,
              responses: list[tuple[TaskMessage, Response]]) -> list[int | Refusal]:
        """Each response's offset, or why Kafka does not hold it; ``TopicError`` (or
        ``KafkaException``) when the topic cannot be created."""
        if not responses:
            return []
        topic = topic_name(self.prefix, job_id)
        self._writer.ensure_topic(topic)
        return self._writer.write_each(topic, [response.to_record(message, self.max_bytes)
                                               for message, response in responses])
