"""What a job says to its endpoint, and how it reads the answer (DESIGN §3b).

- ``body``: a JMESPath expression over ``{"schema", "msg", "constant", "meta", "data"}``
  (``data``: the datamap's values) whose result is the request body. ``null`` members and
  array elements are dropped at any depth (FHIR forbids them) unless ``body_nulls: "keep"``.
- ``content_type``: any JSON media type (``…/json``, ``…+json``), or
  ``application/x-www-form-urlencoded`` for a flat object sent as a form.
- ``forward_headers``: Kafka message headers copied to the request (names, or ``prefix*``);
  W3C ``traceparent`` by default, so traces do not break at the consumer.
- ``success_when``: a JMESPath over ``{"status", "headers", "body"}`` that a 2xx answer must
  make true (JMESPath truth: not false, null or empty), else the record is a dead letter.

JMESPath (the ``jmespath`` package: a specification with a compliance suite) rather than a
template language of our own; each expression is compiled once per job.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

import jmespath
from jmespath.exceptions import JMESPathError, ParseError

from rest_consumer.core.errors import MappingError

DEFAULT_CONTENT_TYPE = "application/json"
FORM = "application/x-www-form-urlencoded"
DEFAULT_FORWARDED = ("traceparent",)
_JSON_TYPE = re.compile(r"^[a-z0-9!#$&^_.-]+/([a-z0-9!#$&^_.-]+\+)?json$", re.IGNORECASE)
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_NO_VALUE: tuple[Any, ...] = (None, False, "", [], {})
"""What JMESPath counts as false."""


def problems(job: dict[str, Any], reserved: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(field, message) for each problem of the fields above; ``reserved``: header names a
    job may not send (the HTTP client's, credentials)."""
    for field in ("body", "success_when"):
        expression = job.get(field)
        if isinstance(expression, str) and (message := expression_problem(expression)):
            yield field, message
    if "body" in job and "json_body" in job:
        yield "body", "use body or json_body, not both"
    content_type = job.get("content_type")
    if isinstance(content_type, str) and not _acceptable(content_type):
        yield "content_type", (f"must be a JSON media type (…/json or …+json) or {FORM}")
    job_headers = {name.lower() for field in ("headers", "secret_headers")
                   for name in (job.get(field) or {})}
    for i, pattern in enumerate(job.get("forward_headers") or []):
        if not isinstance(pattern, str):
            continue
        name = pattern.lower()
        if name.rstrip("*") in reserved or name.startswith("proxy-") or name in job_headers \
                or name in ("idempotency-key", "content-type"):
            yield f"forward_headers.{i}", "is set by the job or the HTTP client: not forwarded"


def expression_problem(expression: str) -> str | None:
    """Why a JMESPath expression does not compile (with the position), or None."""
    try:
        jmespath.compile(expression)
    except ParseError as e:
        return f"invalid JMESPath at position {e.lex_position}: {_first_line(e)}"
    except JMESPathError as e:
        return f"invalid JMESPath: {_first_line(e)}"
    return None


class Body:
    """A job's ``body`` and ``content_type``, compiled once."""

    def __init__(self, expression: str, keep_nulls: bool = False,
                 content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        self.expression = jmespath.compile(expression)
        self.keep_nulls = keep_nulls
        self.content_type = content_type
        self.form = content_type.lower() == FORM

    def render(self, document: dict[str, Any]) -> bytes:
        """The body for one record's document; MappingError when it cannot be made."""
        try:
            value = self.expression.search(document)
        except JMESPathError as e:
            raise MappingError(f"body failed: {_first_line(e)}") from e
        if not self.keep_nulls:
            value = without_nulls(value)
        return _form(value) if self.form else _ENCODER.encode(value).encode()


def without_nulls(value: Any) -> Any:
    """``value`` without ``null`` members and array elements, at any depth."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


class Forwarding:
    """Which Kafka message headers go along with the request."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [p.lower() for p in patterns]

    def headers(self, kafka_headers: dict[str, Any]) -> dict[str, str]:
        """The matching headers whose values HTTP can carry (Latin-1, no line break)."""
        if not self.patterns:
            return {}
        chosen = {}
        for name, value in kafka_headers.items():
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                continue
            if any(fnmatch.fnmatchcase(name.lower(), p) for p in self.patterns):
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    continue
                chosen[name] = value
        return chosen


class SuccessWhen:
    """A 2xx answer is a success only when this expression is true of it."""

    def __init__(self, expression: str) -> None:
        self.source = expression
        self.expression = jmespath.compile(expression)

    def holds(self, status: int, headers: dict[str, str], body: bytes) -> bool:
        document = {"status": status, "headers": headers, "body": answer_body(body)}
        try:
            found = self.expression.search(document)
        except JMESPathError:
            return False
        return not any(found is v or (type(found) is type(v) and found == v)
                       for v in _NO_VALUE)


def answer_body(body: bytes) -> Any:
    """An answer's body as JSON where it parses, else as text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")


def _acceptable(content_type: str) -> bool:
    return content_type.lower() == FORM or bool(_JSON_TYPE.match(content_type))


def _form(value: Any) -> bytes:
    if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
        raise MappingError(f"a {FORM} body must be a flat object")
    return urlencode({k: _scalar(v) for k, v in value.items()}).encode()


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
