"""What counts as a secret outside the secret fields: query parameters named like one, and
literal URL path segments that look like a credential (webhook URLs such as Slack's or
Discord's carry their token in the path)."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_NAME = re.compile(
    r"(pass(word)?|pwd|pw|secret|token|api[-_]?key|apikey|key|auth|authorization|"
    r"signature|sig|credential|session|access[-_]?token|client[-_]?secret)$",
    re.IGNORECASE)
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


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


def looks_like_a_credential(segment: str) -> bool:
    """A literal path segment such as a webhook token: 16 or more URL-safe characters mixing
    letters and digits, or 32 or more of any (an id from the data is templated, not literal)."""
    if "{" in segment or not _URL_SAFE.fullmatch(segment):
        return False
    mixed = any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)
    return len(segment) >= 32 or (len(segment) >= 16 and mixed)


def secret_path_segments(url: str) -> tuple[int, ...]:
    """The positions (in ``path.split("/")``) of a URL template's credential-like segments."""
    return tuple(i for i, segment in enumerate(_path(url).split("/"))
                 if looks_like_a_credential(segment))


def has_redacted(url: str) -> bool:
    """True when ``url`` holds ``***`` for a query secret or a path segment."""
    return (REDACTED in secret_query_values(url).values()
            or REDACTED in _path(url).split("/"))


def redact_url(url: str, secret_path: tuple[int, ...] | None = None) -> str:
    """The URL with every secret-named query value, and every path segment at
    ``secret_path`` (by default: those that look like a credential), shown as ``***``."""
    url = _replace_query(url, lambda name, value: REDACTED if is_secret_name(name) else value)
    positions = secret_path_segments(url) if secret_path is None else secret_path
    return _replace_path(url, lambda i, segment: REDACTED if i in positions else segment)


def restore_url(url: str, stored_url: str) -> str:
    """Put back stored values where ``url`` holds ``***``: for a secret-named parameter, or
    for a path segment (the stored one at the same position)."""
    stored = secret_query_values(stored_url)
    url = _replace_query(url, lambda name, value: stored.get(name, value)
                         if value == REDACTED and is_secret_name(name) else value)
    stored_path = _path(stored_url).split("/")
    return _replace_path(url, lambda i, segment: stored_path[i] if segment == REDACTED
                         and i < len(stored_path) else segment)


def _path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def _replace_path(url: str, choose: Callable[[int, str], str]) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    segments = parts.path.split("/")
    chosen = [choose(i, segment) for i, segment in enumerate(segments)]
    if chosen == segments:
        return url
    return urlunsplit(parts._replace(path="/".join(chosen)))


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
