"""The demo data and the produce command's file reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES
from rest_consumer.core.decoding import decode
from rest_consumer.devtools.producing import avro_container, demo_people, messages_from_file


def test_demo_containers_decode_like_aether_ones() -> None:
    decoded = decode(avro_container(demo_people(3, seed=1)))
    assert decoded.schema["name"] == "Person" and len(decoded.records) == 3
    assert decoded.records[0]["id"] == "person-000000"


def test_an_avro_file_is_one_message_and_json_lines_one_each(tmp_path: Path) -> None:
    assert messages_from_file(FIXTURES / "person-10.avro") == [
        (FIXTURES / "person-10.avro").read_bytes()]
    assert len(messages_from_file(FIXTURES / "person-10.jsonl")) == 10


def test_a_file_that_is_not_json_lines_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        messages_from_file(path)
