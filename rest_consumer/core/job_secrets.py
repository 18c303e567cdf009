"""A job's secrets: where they are, kept across a save (``***``), redacted, and where they go.

``jobs`` validates and hashes a job with these; the API shows ``redact``'s copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from rest_consumer.core.redaction import REDACTED, has_redacted, redact_url, restore_url

Job = dict[str, Any]
Problem = dict[str, str]

SECRET_FIELDS: tuple[tuple[str, ...], ...] = (
    ("basic_auth", "password"), ("basic_auth", "pw"), ("token",), ("oauth2", "client_secret"),
    ("signing", "secret"), ("signing", "previous_secret"), ("tls", "client_key"),
)


def slots(job: Job) -> Iterator[tuple[dict[str, Any], str, tuple[str, ...]]]:
    """(container, key, path) of every secret present in a job."""
    for path in SECRET_FIELDS:
        container: Any = job
        for part in path[:-1]:
            container = container.get(part) if isinstance(container, dict) else None
        if isinstance(container, dict) and path[-1] in container:
            yield container, path[-1], path
    secret_headers = job.get("secret_headers")
    if isinstance(secret_headers, dict):
        for name in secret_headers:
            yield secret_headers, name, ("secret_headers", name)


def _destination(job: Job) -> tuple[Any, Any, Any]:
    """Where a job's secrets go: the URL's scheme and authority, the token URL, the user."""
    url = job.get("url")
    authority: Any = None
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            authority = (parts.scheme.lower(), parts.netloc.lower())
        except ValueError:
            authority = url
    oauth2, basic = job.get("oauth2"), job.get("basic_auth")
    return (authority, oauth2.get("token_url") if isinstance(oauth2, dict) else None,
            basic.get("user") if isinstance(basic, dict) else None)


def _moved(job: Job, stored: Job) -> str | None:
    """What changed about where the secrets go, or None."""
    new, old = _destination(job), _destination(stored)
    for what, a, b in zip(("the url host", "oauth2.token_url", "basic_auth.user"), new, old,
                          strict=True):
        if a != b:
            return what
    return None


def keep_stored(job: Job, stored: Job | None) -> list[Problem]:
    """Replace each ``***`` by the stored secret, unless the secret would go somewhere new."""
    moved = _moved(job, stored) if stored is not None else None
    problems = _keep_url_secrets(job, stored, moved)
    stored_values = {path: c[k] for c, k, path in slots(stored or {})}
    for container, key, path in slots(job):
        if container[key] != REDACTED:
            continue
        if moved is not None:
            problems.append({"field": ".".join(path),
                             "message": f"must be sent again: {moved} changed"})
            continue
        kept = stored_values.get(path)
        if kept is None and path[0] == "basic_auth":  # `pw` and `password` are one secret
            kept = stored_values.get(("basic_auth", "pw" if key == "password" else "password"))
        if kept is None:
            problems.append({"field": ".".join(path),
                             "message": f"{REDACTED!r} keeps a stored secret, but none is stored"})
        else:
            container[key] = kept
    return problems


def _keep_url_secrets(job: Job, stored: Job | None, moved: str | None) -> list[Problem]:
    """``***`` for a query secret or a credential-like path segment keeps the stored one."""
    url = job.get("url")
    if not isinstance(url, str) or not has_redacted(url):
        return []
    if stored is None or moved is not None:
        why = f"{moved} changed" if moved else "no job is stored"
        return [{"field": "url", "message": f"a secret in the URL must be sent again: {why}"}]
    job["url"] = restore_url(url, stored["url"])
    if has_redacted(job["url"]):
        return [{"field": "url", "message": f"{REDACTED!r} keeps a stored secret of the URL, "
                                            "but none is stored there"}]
    return []


def redact(job: Job) -> Job:
    """A copy of a job with every secret shown as ``"***"``."""
    shown = copy.deepcopy(job)
    for container, key, _ in slots(shown):
        container[key] = REDACTED
    if isinstance(shown.get("url"), str):
        shown["url"] = redact_url(shown["url"])
    return shown
