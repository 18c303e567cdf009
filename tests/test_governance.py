"""Aether masking and the emit flag, on the fixtures (phone: level 2, national_id: level 4)."""

from __future__ import annotations

from typing import Any

from conftest import FIXTURES, valid_job
from rest_consumer.core.config import Settings, from_env
from rest_consumer.core.decoding import decode
from rest_consumer.core.governance import Masker
from rest_consumer.core.mapping import SKIP, CompiledJob

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
    masker = Masker(schema, [0, 1], 1)
    assert masker.apply({"a": "x", "b": {"c": 1, "d": 2}}) == {"b": {"d": 2}}
    assert masker.apply({"a": "x", "b": None}) == {"b": None}


ADDRESS = {"type": "record", "name": "Address", "namespace": "org.eha", "fields": [
    {"name": "street", "type": "string", "aetherMaskingLevel": 3},
    {"name": "city", "type": "string"}]}


def test_a_named_type_used_again_by_name_is_masked_there_too() -> None:
    schema = {"type": "record", "name": "P", "namespace": "org.eha", "fields": [
        {"name": "home", "type": ["null", ADDRESS]},
        {"name": "work", "type": ["null", "Address"]},
        {"name": "past", "type": {"type": "array", "items": "org.eha.Address"}}]}
    address = {"street": "1 Main St", "city": "Kano"}
    masked = Masker(schema, [0, 1, 2, 3], 1).apply(
        {"home": address, "work": address, "past": [address, address]})
    assert masked == {"home": {"city": "Kano"}, "work": {"city": "Kano"},
                      "past": [{"city": "Kano"}, {"city": "Kano"}]}
    assert address == {"street": "1 Main St", "city": "Kano"}  # the input is left alone


def test_records_inside_map_values_are_masked_at_any_depth() -> None:
    schema = {"type": "record", "name": "P", "fields": [
        {"name": "by_kind", "type": {"type": "map", "values": {
            "type": "array", "items": ["null", ADDRESS]}}}]}
    masked = Masker(schema, [0, 1, 2, 3], 2).apply(
        {"by_kind": {"home": [{"street": "x", "city": "y"}, None]}})
    assert masked == {"by_kind": {"home": [{"city": "y"}, None]}}


def test_a_schema_without_masked_fields_leaves_records_as_they_are() -> None:
    record = {"a": 1}
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    assert Masker(schema, [0, 1], 0).apply(record) is record


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
