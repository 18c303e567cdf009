"""Aether data governance: masking by schema annotation, and the emit filter. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MASKING_ANNOTATION = "aetherMaskingLevel"


def masked_fields(schema: Any, levels: Sequence[Any], emit_level: Any) -> dict[str, Any]:
    """A tree of the fields to remove: ``{name: True}`` for a field, ``{name: {...}}`` within.

    A field is removed when its ``aetherMaskingLevel`` ranks above ``emit_level`` in
    ``levels``; a level not in the list ranks above every level (fail closed).
    """
    ceiling = list(levels).index(emit_level)
    rank = {level: i for i, level in enumerate(levels)}
    return _masked(schema, rank, ceiling, set())


def _masked(schema: Any, rank: dict[Any, int], ceiling: int, seen: set[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for record in _records(schema):
        name = str(record.get("namespace", "")) + "." + str(record.get("name", ""))
        if name in seen:  # recursive types
            continue
        seen = seen | {name}
        for field in record.get("fields", []):
            level = field.get(MASKING_ANNOTATION)
            if level is not None and rank.get(level, len(rank)) > ceiling:
                tree[field["name"]] = True
                continue
            inner = _masked(field.get("type"), rank, ceiling, seen)
            if inner:
                tree[field["name"]] = inner
    return tree


def _records(schema: Any) -> list[dict[str, Any]]:
    """The record schemas a (possibly union or array) type can hold."""
    if isinstance(schema, list):
        return [r for member in schema for r in _records(member)]
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            return [schema]
        if schema.get("type") == "array":
            return _records(schema.get("items"))
    return []


def apply_mask(record: Any, tree: dict[str, Any]) -> Any:
    """A copy of ``record`` without the fields of ``tree``."""
    if not tree:
        return record
    if isinstance(record, list):
        return [apply_mask(item, tree) for item in record]
    if not isinstance(record, dict):
        return record
    out = {}
    for key, value in record.items():
        rule = tree.get(key)
        if rule is True:
            continue
        out[key] = apply_mask(value, rule) if rule else value
    return out
