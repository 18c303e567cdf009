"""Aether data governance: masking by schema annotation. Pure.

Masking walks each record together with its writer schema, so it reaches fields at any depth:
inside unions, arrays, map values and named types referenced by name (``"Address"`` used a
second time). A field is removed when its ``aetherMaskingLevel`` ranks above ``emit_level``
in ``levels``; a level not in the list ranks above every level (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MASKING_ANNOTATION = "aetherMaskingLevel"
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Masker:
    """Removes the fields a job may not see from records written with one schema."""

    def __init__(self, schema: Any, levels: Sequence[Any], emit_level: Any) -> None:
        if emit_level not in levels:
            raise ValueError("emit_level must be one of the masking levels")
        self.schema = schema
        self._rank = {level: i for i, level in enumerate(levels)}
        self._ceiling = list(levels).index(emit_level)
        self._names: dict[str, Any] = {}
        _collect_names(schema, "", self._names)
        self.active = any(self._masked(f) for t in self._names.values()
                          if t.get("type") == "record" for f in t.get("fields", []))

    def apply(self, record: Any) -> Any:
        """A copy of ``record`` without the masked fields (the record itself if none are)."""
        return self._value(record, self.schema) if self.active else record

    def _masked(self, field: dict[str, Any]) -> bool:
        level = field.get(MASKING_ANNOTATION)
        return level is not None and self._rank.get(level, len(self._rank)) > self._ceiling

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self._names.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), str | list | dict) \
                and schema["type"] not in ("record", "array", "map", "enum", "fixed"):
            return self._resolve(schema["type"])  # {"type": "Address"} or {"type": "string"}
        return schema

    def _value(self, value: Any, schema: Any) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            # fastavro gives plain values, so the branch is unknown: apply every branch that
            # could hold this value (a field masked in any of them goes).
            for branch in schema:
                value = self._value(value, branch)
            return value
        if not isinstance(schema, dict):
            return value
        kind = schema.get("type")
        if kind == "record" and isinstance(value, dict):
            return self._record(value, schema)
        if kind == "map" and isinstance(value, dict):
            return {k: self._value(v, schema.get("values")) for k, v in value.items()}
        if kind == "array" and isinstance(value, list):
            return [self._value(v, schema.get("items")) for v in value]
        return value

    def _record(self, value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
        out = dict(value)
        for field in schema.get("fields", []):
            name = field.get("name")
            if name not in out:
                continue
            if self._masked(field):
                del out[name]
            else:
                out[name] = self._value(out[name], field.get("type"))
        return out


def _collect_names(schema: Any, namespace: str, names: dict[str, Any]) -> None:
    """Every named type of a schema, by short and by full name (Avro's namespace rules)."""
    stack = [(schema, namespace)]
    while stack:
        node, space = stack.pop()
        if isinstance(node, list):
            stack.extend((member, space) for member in node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind in ("record", "enum", "fixed", "error") and isinstance(node.get("name"), str):
            name = node["name"]
            space = name.rpartition(".")[0] if "." in name else node.get("namespace", space)
            short = name.rpartition(".")[2]
            names.setdefault(short, node)
            names[f"{space}.{short}" if space else short] = node
        if kind in ("record", "error"):
            stack.extend((f.get("type"), space) for f in node.get("fields", [])
                         if isinstance(f, dict))
        elif kind == "array":
            stack.append((node.get("items"), space))
        elif kind == "map":
            stack.append((node.get("values"), space))
        elif isinstance(kind, dict | list):
            stack.append((kind, space))
