"""Decoding against every Aether test vector."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from rest_consumer.core.decoding import decode
from rest_consumer.core.errors import DecodeError


@pytest.mark.parametrize("name", ["person-1", "person-10", "person-10-null-codec", "person-500"])
def test_each_avro_vector_decodes_to_its_jsonl(name: str) -> None:
    decoded = decode((FIXTURES / f"{name}.avro").read_bytes())
    expected = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]
    assert decoded.records == expected


def test_the_schema_is_the_writer_schema_exactly_as_stored() -> None:
    decoded = decode((FIXTURES / "person-10.avro").read_bytes())
    avsc = json.loads((FIXTURES / "person.avsc").read_text())
    assert decoded.schema["name"] == "Person"  # not org.eha.aether.demo.Person
    assert decoded.schema["namespace"] == avsc["namespace"]
    assert [f["name"] for f in decoded.schema["fields"]] == [f["name"] for f in avsc["fields"]]
    # as the writer stored it: spavro spelled out the nested records' namespaces
    household = next(f for f in decoded.schema["fields"] if f["name"] == "household")
    assert household["type"][1]["namespace"] == "org.eha.aether.demo"
    phone = next(f for f in decoded.schema["fields"] if f["name"] == "phone")
    assert phone["aetherMaskingLevel"] == 2


def test_json_is_one_item_without_schema() -> None:
    decoded = decode((FIXTURES / "plain.json").read_bytes())
    assert decoded.schema is None
    assert decoded.records == [json.loads((FIXTURES / "plain.json").read_text())]


def test_text_is_one_item_holding_the_string() -> None:
    decoded = decode((FIXTURES / "plain.txt").read_bytes())
    assert decoded.records == [(FIXTURES / "plain.txt").read_text()]


@pytest.mark.parametrize("name", ["poison-binary.bin", "poison-truncated.avro"])
def test_poison_raises_a_decode_error(name: str) -> None:
    with pytest.raises(DecodeError):
        decode((FIXTURES / name).read_bytes())


def test_a_tombstone_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        decode(None)
