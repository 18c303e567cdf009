"""What counts as a secret outside the secret fields: query parameters named like one."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_NAME = re.compile(
    r"(pass(word)?|pwd|pw|secret|token|api[-_]?key|apikey|key|auth|authorization|"
    r"signature|sig|credential|session|access[-_]?token|client[-_]?secret)$",
    re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for names such as ``api_key``, ``token``, ``password``, ``X-Signature``."""
    return bool(_SECRET_NAME.search(name.replace("-", "_")))


def secret_query_values(url: str) -> dict[str, str]:
    """The values of a URL's query parameters named like secrets."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    return {k: v for k, v in parse_qsl(query, keep_blank_values=True) if is_secret_name(k)}


def redact_url(url: str) -> str:
    """The URL with every secret-named query value shown as ``***``."""
    return _replace_query(url, lambda name, value: REDACTED if is_secret_name(name) else value)


def restore_url(url: str, stored_url: str) -> str:
    """Put back stored values where ``url`` holds ``***`` for a secret-named parameter."""
    stored = secret_query_values(stored_url)
    return _replace_query(url, lambda name, value: stored.get(name, value)
                          if value == REDACTED and is_secret_name(name) else value)


def _replace_query(url: str, choose: Callable[[str, str], str]) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_name(k) for k, _ in pairs):
        return url
    chosen = [(k, choose(k, v)) for k, v in pairs]
    query = urlencode(chosen, safe="{}*")
    return urlunsplit(parts._replace(query=query))
