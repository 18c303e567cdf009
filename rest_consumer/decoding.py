"""Kafka message value -> (schema, records). Pure: no I/O beyond the bytes given."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro

from rest_consumer.errors import DecodeError

AVRO_MAGIC = b"Obj\x01"


@dataclass(frozen=True)
class Decoded:
    """What a message value holds: the writer schema (None unless Avro) and its records."""

    schema: Any
    records: list[Any]


def decode(value: bytes | None) -> Decoded:
    """An Avro object container (one item per record), else UTF-8 JSON, else text.

    The schema is the container's ``avro.schema`` metadata exactly as stored (so
    ``$.schema.name`` is ``"Person"``, not a fully qualified name).
    """
    if value is None:
        raise DecodeError("the message has no value (a tombstone)")
    if value.startswith(AVRO_MAGIC):
        return _decode_avro(value)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"neither Avro, JSON nor UTF-8 text: {e}") from e
    try:
        return Decoded(None, [json.loads(text)])
    except ValueError:
        return Decoded(None, [text])


def _decode_avro(value: bytes) -> Decoded:
    try:
        reader = fastavro.reader(io.BytesIO(value))
        records = list(reader)
        schema = json.loads(reader.metadata["avro.schema"])
    except Exception as e:
        raise DecodeError(f"corrupt Avro container: {type(e).__name__}: {e}") from e
    return Decoded(schema, records)
