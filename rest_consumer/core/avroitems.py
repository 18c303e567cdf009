"""How many items an Avro block holds, counted from its bytes without building one of them.

fastavro builds every value it reads: a 322-byte container can claim ten million small records
in one array, about 2 GB of Python objects before any later check could run. ``ItemCounter``
walks a block's bytes with the writer schema instead, counting array items and map values at
any depth, and stops at the first block header that would take the count past the cap. Pure:
it reads the bytes given and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_consumer.core.errors import DecodeError

PRIMITIVE_WIDTHS = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8,
                    "bytes": 1, "string": 1}
"""The fewest bytes a value of each primitive type takes (a varint takes at least one)."""
_CYCLE = 1 << 30
"""A named type met again inside itself: that branch is never the narrowest."""


class _Cursor:
    """A position in a block, and the items counted so far against their cap."""

    __slots__ = ("cap", "data", "items", "pos")

    def __init__(self, data: bytes, cap: int) -> None:
        self.data, self.pos, self.items, self.cap = data, 0, 0, cap

    def count(self, items: int) -> None:
        self.items += items
        if self.items > self.cap:
            raise ItemCapExceeded(self.items)


class ItemCapExceeded(DecodeError):
    """Raised when a block holds more items than its cap allows."""


Skip = Callable[[_Cursor], None]


def _long(c: _Cursor) -> int:
    data, pos = c.data, c.pos
    byte = data[pos]
    result, shift = byte & 0x7F, 7
    while byte & 0x80:
        pos += 1
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise DecodeError("corrupt Avro data: varint too long")
    c.pos = pos + 1
    return (result >> 1) ^ -(result & 1)


def _fixed_width(width: int) -> Skip:
    def skip(c: _Cursor) -> None:
        c.pos += width
    return skip


def _skip_varint(c: _Cursor) -> None:
    _long(c)


def _skip_sized(c: _Cursor) -> None:
    size = _long(c)
    if size < 0:
        raise DecodeError("corrupt Avro data: negative length")
    c.pos += size


def _skip_nothing(c: _Cursor) -> None:
    return None


_PRIMITIVE_SKIPS: dict[str, Skip] = {
    "null": _skip_nothing, "boolean": _fixed_width(1), "int": _skip_varint,
    "long": _skip_varint, "float": _fixed_width(4), "double": _fixed_width(8),
    "bytes": _skip_sized, "string": _skip_sized}


def _collection(entry: Skip) -> Skip:
    """An array's items or a map's entries: blocks of ``count`` entries until a zero count."""
    def skip(c: _Cursor) -> None:
        while True:
            count = _long(c)
            if count == 0:
                return
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                _long(c)
            c.count(count)
            for _ in range(count):
                entry(c)
    return skip


class ItemCounter:
    """Counts the items of blocks written with one schema (compiled once)."""

    def __init__(self, schema: Any) -> None:
        self._skips: dict[str, Skip] = {}
        self._widths: dict[str, int] = {}
        self._named: dict[str, Any] = {}
        self._collections: list[tuple[int, Any, str]] = []
        """(bytes before each entry's value, the value's schema, its namespace)."""
        self._collect(schema, "")
        self._record = self._compile(schema, "")
        widths = [extra + self.width(s, ns) for extra, s, ns in self._collections]
        self.narrowest_item: int | None = min(widths) if widths else None
        """The fewest bytes one array item or map entry takes; None without collections."""

    def count(self, block: bytes, records: int, cap: int) -> int:
        """The array items and map values of ``records`` records (the records themselves not
        included); ItemCapExceeded past ``cap``, DecodeError for bytes that do not follow the
        schema."""
        cursor = _Cursor(block, cap)
        try:
            for _ in range(records):
                self._record(cursor)
        except IndexError:
            raise DecodeError("corrupt Avro data: truncated block") from None
        if cursor.pos > len(block):
            raise DecodeError("corrupt Avro data: truncated block")
        return cursor.items

    def width(self, schema: Any, namespace: str, seen: frozenset[str] = frozenset()) -> int:
        """The fewest bytes a value of ``schema`` takes."""
        if isinstance(schema, str):
            if schema in PRIMITIVE_WIDTHS:
                return PRIMITIVE_WIDTHS[schema]
            name = self._full_name(schema, namespace)
            if name in seen:
                return _CYCLE
            return self.width(self._named[name], namespace, seen | {name})
        if isinstance(schema, list):
            return 1 + min((self.width(s, namespace, seen) for s in schema), default=0)
        return self._complex_width(schema, namespace, seen)

    def _complex_width(self, schema: dict[str, Any], namespace: str,
                       seen: frozenset[str]) -> int:
        kind = schema.get("type")
        if kind in ("record", "error"):
            full, space = _name_of(schema, namespace)
            seen = seen | {full}
            return sum(self.width(f.get("type"), space, seen) for f in schema.get("fields", []))
        if kind == "fixed":
            return int(schema.get("size", 0))
        if kind in ("enum", "array", "map"):
            return 1
        return self.width(kind, namespace, seen)

    def _full_name(self, name: str, namespace: str) -> str:
        if "." not in name and namespace and f"{namespace}.{name}" in self._named:
            return f"{namespace}.{name}"
        if name in self._named:
            return name
        raise DecodeError(f"the schema refers to an unknown type {name!r}")

    def _collect(self, schema: Any, namespace: str) -> None:
        """Every named type, by full and short name; every collection's entries."""
        stack = [(schema, namespace)]
        while stack:
            node, space = stack.pop()
            if isinstance(node, list):
                stack.extend((member, space) for member in node)
            elif isinstance(node, dict):
                kind = node.get("type")
                if kind in ("record", "error", "enum", "fixed"):
                    full, space = _name_of(node, space)
                    self._named[full] = node
                    self._named.setdefault(full.rpartition(".")[2], node)
                if kind == "array":
                    self._collections.append((0, node.get("items"), space))
                    stack.append((node.get("items"), space))
                elif kind == "map":
                    self._collections.append((1, node.get("values"), space))  # 1: the key
                    stack.append((node.get("values"), space))
                elif kind in ("record", "error"):
                    stack.extend((f.get("type"), space) for f in node.get("fields", [])
                                 if isinstance(f, dict))
                elif isinstance(kind, dict | list):
                    stack.append((kind, space))

    def _compile(self, schema: Any, namespace: str) -> Skip:
        if isinstance(schema, str):
            if schema in _PRIMITIVE_SKIPS:
                return _PRIMITIVE_SKIPS[schema]
            return self._named_skip(self._full_name(schema, namespace))
        if isinstance(schema, list):
            branches = [self._compile(s, namespace) for s in schema]

            def union(c: _Cursor) -> None:
                branches[_long(c)](c)
            return union
        if not isinstance(schema, dict):
            raise DecodeError(f"not an Avro schema: {str(schema)[:60]!r}")
        return self._compile_complex(schema, namespace)

    def _compile_complex(self, schema: dict[str, Any], namespace: str) -> Skip:
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            return self._named_skip(_name_of(schema, namespace)[0])
        if kind == "array":
            return _collection(self._compile(schema.get("items"), namespace))
        if kind == "map":
            value = self._compile(schema.get("values"), namespace)

            def entry(c: _Cursor) -> None:
                _skip_sized(c)
                value(c)
            return _collection(entry)
        return self._compile(kind, namespace)

    def _named_skip(self, full: str) -> Skip:
        """A named type's skip, compiled once; a type that holds itself refers to it late."""
        if full not in self._skips:
            late: list[Skip] = []
            self._skips[full] = lambda c: late[0](c)
            late.append(self._compile_named(self._named[full], full))
        return self._skips[full]

    def _compile_named(self, node: dict[str, Any], full: str) -> Skip:
        kind = node.get("type")
        if kind == "enum":
            return _skip_varint
        if kind == "fixed":
            return _fixed_width(int(node.get("size", 0)))
        space = full.rpartition(".")[0]
        fields = [self._compile(f.get("type"), space) for f in node.get("fields", [])]

        def record(c: _Cursor) -> None:
            for field in fields:
                field(c)
        return record


def _name_of(node: dict[str, Any], namespace: str) -> tuple[str, str]:
    """A named type's full name and the namespace its inner names resolve in."""
    name = str(node.get("name", ""))
    if "." in name:
        return name, name.rpartition(".")[0]
    space = node.get("namespace", namespace) or ""
    return (f"{space}.{name}" if space else name), space


class ItemTally:
    """A message's items (records, array items, map values) against its cap, block by block.

    A block's bytes are walked only once the blocks so far could hold more than the cap: every
    entry takes at least ``narrowest_item`` bytes, so small messages are never walked. Until
    then the blocks are kept (they are small by that same bound) and walked if it comes to it.
    """

    def __init__(self, counter: ItemCounter, cap: int) -> None:
        self.counter = counter
        self.cap = cap
        self.exact = 0
        self._bound = 0
        self._unwalked: list[tuple[bytes, int]] = []
        self._walking = counter.narrowest_item == 0  # zero-byte items: bytes bound nothing

    def add(self, block: bytes, records: int) -> None:
        """Count one block of ``records`` records; ItemCapExceeded past the cap."""
        narrowest = self.counter.narrowest_item
        if narrowest is None:  # no array or map: records are all there is
            self._count(records)
            return
        if not self._walking:
            bound = records + len(block) // narrowest
            if self.exact + self._bound + bound <= self.cap:
                self._bound += bound
                self._unwalked.append((block, records))
                return
            self._walking = True
            for earlier, count in self._unwalked:
                self._walk(earlier, count)
            self._unwalked, self._bound = [], 0
        self._walk(block, records)

    def _walk(self, block: bytes, records: int) -> None:
        self._count(records)
        self._count(self.counter.count(block, records, self.cap - self.exact))

    def _count(self, items: int) -> None:
        self.exact += items
        if self.exact > self.cap:
            raise ItemCapExceeded(self.exact)
