"""Counting an Avro block's items from its bytes, without building them."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from rest_consumer.core.avroitems import ItemCapExceeded, ItemCounter
from rest_consumer.core.errors import DecodeError

TAG = {"type": "record", "name": "Tag", "fields": [{"name": "n", "type": "string"}]}
SCHEMA = {"type": "record", "name": "P", "namespace": "org.eha", "fields": [
    {"name": "id", "type": "string"},
    {"name": "tags", "type": {"type": "array", "items": TAG}},
    {"name": "more", "type": {"type": "array", "items": "org.eha.Tag"}},
    {"name": "by", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
    {"name": "opt", "type": ["null", "Tag"]},
    {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
    {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
    {"name": "d", "type": "double"}, {"name": "f", "type": "float"},
    {"name": "b", "type": "boolean"}, {"name": "raw", "type": "bytes"},
]}
NODE = {"type": "record", "name": "Node", "fields": [
    {"name": "kids", "type": {"type": "array", "items": "Node"}}]}


def block(schema: Any, records: list[Any]) -> bytes:
    out = io.BytesIO()
    parsed = fastavro.parse_schema(schema)
    for r in records:
        fastavro.schemaless_writer(out, parsed, r)
    return out.getvalue()


def person(i: int) -> dict[str, Any]:
    return {"id": f"p{i}", "tags": [{"n": "a"}, {"n": "b"}], "more": [{"n": "c"}],
            "by": {"x": [1, 2, 3], "y": []}, "opt": {"n": "o"} if i % 2 else None,
            "kind": "b", "fx": b"abc", "d": 1.5, "f": 2.5, "b": True, "raw": b"\x00\x01"}


def test_it_counts_array_items_and_map_values_at_any_depth() -> None:
    data = block(SCHEMA, [person(i) for i in range(3)])
    # per record: 2 tags + 1 more + 2 map values + 3 longs = 8
    assert ItemCounter(SCHEMA).count(data, 3, 1000) == 24


def test_it_follows_a_recursive_type() -> None:
    tree = {"kids": [{"kids": [{"kids": []}, {"kids": []}]}, {"kids": []}]}
    assert ItemCounter(NODE).count(block(NODE, [tree]), 1, 100) == 4


def test_it_stops_at_the_block_header_that_passes_the_cap() -> None:
    # an array claiming a billion booleans, in six bytes
    schema = {"type": "record", "name": "B", "fields": [
        {"name": "a", "type": {"type": "array", "items": "boolean"}}]}
    with pytest.raises(ItemCapExceeded):
        ItemCounter(schema).count(b"\x80\xa8\xd6\xb9\x07\x01", 1, 1000)


def test_truncated_bytes_are_a_decode_error() -> None:
    data = block(SCHEMA, [person(1)])
    with pytest.raises(DecodeError, match="truncated"):
        ItemCounter(SCHEMA).count(data[:-5], 1, 1000)


def test_the_narrowest_entry_is_known_from_the_schema() -> None:
    assert ItemCounter(SCHEMA).narrowest_item == 1  # a long, or a map key
    assert ItemCounter(TAG).narrowest_item is None  # no collection at all
    pair = {"type": "record", "name": "Two", "fields": [
        {"name": "a", "type": "null"}, {"name": "b", "type": "null"}]}
    wrapper = {"type": "record", "name": "W", "fields": [
        {"name": "xs", "type": {"type": "array", "items": pair}}]}
    assert ItemCounter(wrapper).narrowest_item == 0
