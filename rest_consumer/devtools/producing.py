"""``rest-consumer produce``: put Avro containers, JSON lines or demo records on a topic."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Producer

from rest_consumer.core.decoding import AVRO_MAGIC

DEMO_SCHEMA: dict[str, Any] = json.loads(
    resources.files("rest_consumer.devtools").joinpath("demo_person.avsc").read_text())
_NAMES = ("Amina", "Chidi", "Fatima", "Kwame", "Ngozi", "Tunde", "Zainab", "Musa", "Aisha")


def messages_from_file(path: Path) -> list[bytes]:
    """An Avro container file is one message; any other file is JSON lines, one per line.

    Every line is parsed first, so a file that is not JSON lines is refused, not half-sent.
    """
    data = path.read_bytes()
    if data.startswith(AVRO_MAGIC):
        return [data]
    lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}: line {number} is not JSON: {e}") from e
    return [line.encode() for line in lines]


def demo_people(count: int, seed: int | None = None, start: int = 0) -> list[dict[str, Any]]:
    """Synthetic Aether ``Person`` records, as the demo topic carries them."""
    rand = random.Random(seed)
    people = []
    for i in range(start, start + count):
        people.append({
            "id": f"person-{i:06d}", "name": f"{rand.choice(_NAMES)} {i}",
            "age": rand.randint(0, 90),
            "household": {"id": f"hh-{i // 4:05d}", "location": {
                "lat": round(rand.uniform(4, 13), 5), "lng": round(rand.uniform(3, 14), 5)}},
            "tags": rand.sample(["child", "adult", "head", "visitor"], 1),
            "phone": f"+234{rand.randint(10**9, 10**10 - 1)}",
            "national_id": f"NIN{rand.randint(10**10, 10**11 - 1)}",
            "approved": rand.random() < 0.8, "_version": "0",
        })
    return people


def avro_container(records: list[dict[str, Any]], schema: dict[str, Any] | None = None) -> bytes:
    """An Avro object container (deflate), as Aether's producer writes it."""
    out = io.BytesIO()
    # The schema as given (not parsed), so the container stores "Person" as Aether does.
    fastavro.writer(out, schema or DEMO_SCHEMA, records, codec="deflate")
    return out.getvalue()


def demo_messages(count: int, per_message: int = 10) -> Iterator[bytes]:
    for start in range(0, count, per_message):
        yield avro_container(demo_people(min(per_message, count - start), start, start))


class TopicWriter:
    """A producer that reports delivery failures instead of losing them."""

    def __init__(self, config: dict[str, Any]) -> None:
        # log_level 3: errors only (librdkafka warns while a new broker's coordinator loads);
        # delivery failures still reach _delivered.
        self.producer = Producer({**config, "linger.ms": 20, "enable.idempotence": True,
                                  "log_level": 3})
        self.errors: list[str] = []

    def write(self, topic: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.5)
        self.producer.poll(0)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))

    def close(self, timeout: float = 60) -> int:
        """Wait for every message; returns how many are still undelivered."""
        return int(self.producer.flush(timeout))
