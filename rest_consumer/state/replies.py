"""Redis replies as text: one helper, whether or not a client decodes responses."""

from __future__ import annotations

from typing import Any


def as_text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def any_as_text(value: Any) -> str:
    """A reply that may also be a number (a script's integer reply) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
