"""Kafka message value -> (schema, records). Pure: no I/O beyond the bytes given.

The Avro object container is read here rather than by ``fastavro.reader`` so that what one
message may expand to is capped *while* it is decompressed: a 128 KiB deflate block can
hold 128 MiB, and the whole block would be in memory before any later check.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro._read_py import schemaless_reader as _python_reader

from rest_consumer.core.avroitems import ItemCapExceeded, ItemCounter, ItemTally
from rest_consumer.core.errors import DecodeError

AVRO_MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MAX_JSON_DEPTH = 100
"""Deeper JSON is refused: mapping, masking and re-encoding it would recurse that deep."""
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_ITEMS = 250_000
"""Records, array items and map values together, at any depth: about 100 MB of Python objects
at worst, while Aether's largest messages (500 records) hold a few thousand."""


@dataclass(frozen=True)
class Decoded:
    """What a message value holds: the writer schema (None unless Avro) and its records."""

    schema: Any
    records: list[Any]


@dataclass(frozen=True)
class Limits:
    """What one message may decode to; over either cap it is a DecodeError (dead letter)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_records: int = DEFAULT_MAX_RECORDS
    max_items: int = DEFAULT_MAX_ITEMS

    def too_many_items(self) -> DecodeError:
        return DecodeError(f"the message holds more than {self.max_items} items (records, "
                           "array items and map values; DECODE_MAX_ITEMS)")


def decode(value: bytes | None, limits: Limits | None = None) -> Decoded:
    """An Avro object container (one item per record), else UTF-8 JSON, else text.

    The schema is the container's ``avro.schema`` metadata exactly as stored (so
    ``$.schema.name`` is ``"Person"``, not a fully qualified name).
    """
    limits = limits or Limits()
    if value is None:
        raise DecodeError("the message has no value (a tombstone)")
    if value.startswith(AVRO_MAGIC):
        return _decode_avro(value, limits)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"neither Avro, JSON nor UTF-8 text: {e}") from e
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return Decoded(None, [text])
    # Each level opens a bracket: text with fewer brackets than the limit needs no walk.
    if (value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH
            and nesting_depth(parsed) > MAX_JSON_DEPTH):
        raise DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    # Every array item but an array's first follows a comma, every object value a colon.
    if (value.count(b",") + value.count(b"[") + value.count(b":") >= limits.max_items
            and json_items(parsed) > limits.max_items):
        raise limits.too_many_items()
    return Decoded(None, [parsed])


def json_items(value: Any) -> int:
    """Array items and object values of a JSON value, at any depth, without recursion."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is not None:
            count += len(children)
            stack.extend(children)
    return count


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # no need to walk further once over the limit
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _decode_avro(value: bytes, limits: Limits) -> Decoded:
    try:
        stream = io.BytesIO(value)
        header = fastavro.schemaless_reader(stream, _HEADER_SCHEMA)
        assert isinstance(header, dict)
        meta = header["meta"]
        schema = json.loads(meta["avro.schema"])
        codec = meta.get("avro.codec", b"null").decode()
        counter = ItemCounter(schema)
        parsed = fastavro.parse_schema(schema)
        # fastavro's compiled reader recurses in C and crashes the process on a record nested
        # a few thousand deep, which a recursive schema allows: read those in Python, where
        # the same depth is a RecursionError (a dead letter).
        reader = _python_reader if _is_recursive(schema) else fastavro.schemaless_reader
        records = _read_blocks(stream, header["sync"], codec, (parsed, counter), limits,
                               reader)
    except ItemCapExceeded:
        raise limits.too_many_items() from None
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"corrupt Avro container: {type(e).__name__}: {e}") from e
    return Decoded(schema, records)


def _read_blocks(stream: io.BytesIO, sync: bytes, codec: str,
                 schema: tuple[Any, ItemCounter], limits: Limits, reader: Any) -> list[Any]:
    records: list[Any] = []
    budget = limits.max_bytes
    parsed, counter = schema
    items = ItemTally(counter, limits.max_items)
    while stream.tell() < len(stream.getbuffer()):
        count, size = _read_long(stream), _read_long(stream)
        if count < 0 or size < 0:
            raise DecodeError("corrupt Avro container: negative block count or size")
        if len(records) + count > limits.max_records:
            raise DecodeError(f"the message holds more than {limits.max_records} records "
                              "(DECODE_MAX_RECORDS)")
        data = stream.read(size)
        if len(data) != size:
            raise DecodeError("corrupt Avro container: truncated block")
        block = _decompress(data, codec, budget)
        budget -= len(block)
        items.add(block, count)
        block_stream = io.BytesIO(block)
        records.extend(reader(block_stream, parsed) for _ in range(count))
        if stream.read(SYNC_SIZE) != sync:
            raise DecodeError("corrupt Avro container: sync marker mismatch")
    return records


def _decompress(data: bytes, codec: str, budget: int) -> bytes:
    """A block's bytes, refusing to produce more than ``budget`` of them."""
    if codec == "null":
        block = data
    elif codec == "deflate":
        inflater = zlib.decompressobj(-15)
        block = inflater.decompress(data, budget + 1)
    else:
        raise DecodeError(f"unsupported Avro codec {codec!r} (null and deflate are read)")
    if len(block) > budget:
        raise DecodeError(f"the message decodes to more than {_mib(budget)} "
                          "(DECODE_MAX_BYTES)")
    return block


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def _read_long(stream: io.BytesIO) -> int:
    """One Avro ``long``: a zig-zag varint."""
    shift, result = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise DecodeError("corrupt Avro container: truncated block header")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
        if shift > 63:
            raise DecodeError("corrupt Avro container: varint too long")


def _is_recursive(schema: Any, enclosing: frozenset[str] = frozenset()) -> bool:
    """True when a named type refers to itself, directly or through the types it holds."""
    if isinstance(schema, str):
        return schema in enclosing or schema.rpartition(".")[2] in enclosing
    if isinstance(schema, list):
        return any(_is_recursive(member, enclosing) for member in schema)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind in ("record", "error") and isinstance(schema.get("name"), str):
        name = schema["name"]
        enclosing = enclosing | {name, name.rpartition(".")[2],
                                 f"{schema.get('namespace', '')}.{name}"}
        return any(_is_recursive(f.get("type"), enclosing) for f in schema.get("fields", [])
                   if isinstance(f, dict))
    if kind == "array":
        return _is_recursive(schema.get("items"), enclosing)
    if kind == "map":
        return _is_recursive(schema.get("values"), enclosing)
    return isinstance(kind, dict | list) and _is_recursive(kind, enclosing)


_HEADER_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "org.apache.avro.file.Header",
    "fields": [
        {"name": "magic", "type": {"type": "fixed", "name": "magic", "size": 4}},
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "sync", "size": SYNC_SIZE}},
    ],
})
