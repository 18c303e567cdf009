"""Aether masking and the emit flag, on the fixtures (phone: level 2, national_id: level 4)."""

from __future__ import annotations

from typing import Any

from conftest import FIXTURES, valid_job
from rest_consumer.config import Settings, from_env
from rest_consumer.decoding import decode
from rest_consumer.governance import apply_mask, masked_fields
from rest_consumer.mapping import SKIP, CompiledJob

META = {"topic": "t", "partition": 0, "offset": 0, "key": None, "timestamp": 0,
        "headers": {}, "index": 0}
PEOPLE = decode((FIXTURES / "person-10.avro").read_bytes())


def job(**overrides: Any) -> CompiledJob:
    return CompiledJob({**valid_job(**overrides), "hash": "h"})


def test_fields_above_the_emit_level_are_removed() -> None:
    compiled = job(mask_levels=[0, 1, 2, 3, 4, 5], emit_level=2)
    seen = [compiled.governed(PEOPLE.schema, r, META) for r in PEOPLE.records]
    assert all("national_id" not in r for r in seen)
    assert any(r.get("phone") for r in seen)
    compiled = job(mask_levels=[0, 1, 2, 3, 4, 5], emit_level=1)
    assert all("phone" not in compiled.governed(PEOPLE.schema, r, META) for r in PEOPLE.records)


def test_an_unknown_level_is_removed_whatever_the_emit_level() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "string", "aetherMaskingLevel": "mystery"},
        {"name": "b", "type": ["null", {"type": "record", "name": "In", "fields": [
            {"name": "c", "type": "int", "aetherMaskingLevel": 9}]}]}]}
    tree = masked_fields(schema, [0, 1], 1)
    assert tree == {"a": True, "b": {"c": True}}
    assert apply_mask({"a": "x", "b": {"c": 1, "d": 2}}, tree) == {"b": {"d": 2}}
    assert apply_mask({"a": "x", "b": None}, tree) == {"b": None}


def test_a_record_whose_flag_is_not_allowed_is_skipped() -> None:
    compiled = job(emit_flag={"path": "$.msg.approved", "values": [True]})
    kept = [r for r in PEOPLE.records if compiled.governed(PEOPLE.schema, r, META) is not SKIP]
    assert kept == [r for r in PEOPLE.records if r["approved"] is True]
    assert 0 < len(kept) < len(PEOPLE.records)


def test_environment_defaults_apply_to_jobs_that_set_none(tmp_path: Any) -> None:
    settings = from_env({"AETHER_MASKING_SCHEMA_LEVELS": "[0,1,2,3,4,5]",
                         "AETHER_MASKING_SCHEMA_EMIT_LEVEL": "3",
                         "AETHER_EMIT_FLAG_REQUIRED": "true"}, dotenv=tmp_path / "none")
    assert settings.mask_levels == (0, 1, 2, 3, 4, 5) and settings.emit_level == 3
    compiled = CompiledJob({**valid_job(), "hash": "h"}, settings)
    record = next(r for r in PEOPLE.records if r["approved"] is True and r["national_id"])
    assert "national_id" not in compiled.governed(PEOPLE.schema, record, META)
    unapproved = next(r for r in PEOPLE.records if r["approved"] is not True)
    assert compiled.governed(PEOPLE.schema, unapproved, META) is SKIP
    assert CompiledJob({**valid_job(), "hash": "h"}, Settings()).emit_flag is None
