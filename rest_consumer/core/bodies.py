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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jmespath
from jmespath.exceptions import JMESPathError, ParseError

from rest_consumer.core.errors import MappingError

# Headers that always carry credentials: they belong in secret_headers, never shown.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# Headers that frame the request or choose its virtual host: the client sets them, never a job.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te",
                              "upgrade", "expect", "trailer", "keep-alive"})
_NOT_FORWARDED = RESERVED_HEADERS | CREDENTIAL_HEADERS | {"idempotency-key", "content-type"}
"""Headers the job's own request sets: a Kafka header never replaces them."""
DEFAULT_CONTENT_TYPE = "application/json"
FORM = "application/x-www-form-urlencoded"
DEFAULT_FORWARDED = ("traceparent",)
_JSON_TYPE = re.compile(r"^[a-z0-9!#$&^_.-]+/([a-z0-9!#$&^_.-]+\+)?json$", re.IGNORECASE)
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
EXPRESSION_ERRORS = (JMESPathError, RecursionError, ValueError, TypeError, ArithmeticError)
"""What compiling or evaluating a JMESPath may raise on odd input (never a crash here)."""
_NO_VALUE: tuple[Any, ...] = (None, False, "", [], {})
"""What JMESPath counts as false."""


def problems(job: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, message) for each problem of the fields above."""
    for field in ("body", "success_when"):
        expression = job.get(field)
        if isinstance(expression, str) and (message := expression_problem(expression)):
            yield field, message
    if "body" in job and "json_body" in job:
        yield "body", "use body or json_body, not both"
    yield from _batch_problems(job)
    content_type = job.get("content_type")
    if isinstance(content_type, str) and not _acceptable(content_type):
        yield "content_type", (f"must be a JSON media type (…/json or …+json) or {FORM}")
    job_headers = {name.lower() for field in ("headers", "secret_headers")
                   for name in _typed(job, field, dict) if isinstance(name, str)}
    for i, pattern in enumerate(_typed(job, "forward_headers", list)):
        if not isinstance(pattern, str):
            continue
        name = pattern.lower()
        if (name.rstrip("*") in _NOT_FORWARDED or name.startswith("proxy-")
                or name in job_headers):
            yield f"forward_headers.{i}", "is set by the job or the HTTP client: not forwarded"


def _typed(job: dict[str, Any], field: str, kind: type) -> Any:
    """``job[field]`` when it has the expected type (the schema reports it otherwise)."""
    value = job.get(field)
    return value if isinstance(value, kind) else kind()


def _batch_problems(job: dict[str, Any]) -> Iterator[tuple[str, str]]:
    batch = job.get("request_batch")
    if isinstance(batch, dict):
        if "body" not in job and "json_body" not in job:
            yield "request_batch", "needs a body (body or json_body) for each record"
        if batch.get("format", "json") == "json" and str(
                job.get("content_type", "")).lower() == FORM:
            yield "request_batch", f"a json batch cannot wrap {FORM} bodies"
        if isinstance(batch.get("wrap"), str) and (message := expression_problem(batch["wrap"])):
            yield "request_batch.wrap", message
    results = job.get("item_results")
    if isinstance(results, dict):
        if not isinstance(batch, dict):
            yield "item_results", "needs request_batch"
        yield from _item_results_problems(results, _typed(job, "datamap", dict))


def _item_results_problems(results: dict[str, Any],
                           datamap: dict[str, Any]) -> Iterator[tuple[str, str]]:
    modes = [{"items", "ok"} <= set(results), {"errors", "key"} <= set(results)]
    if modes.count(True) != 1 or len(results) != 2:
        yield "item_results", 'give either "items" and "ok", or "errors" and "key"'
    for name in ("items", "ok", "errors"):
        if isinstance(results.get(name), str) and (message := expression_problem(results[name])):
            yield f"item_results.{name}", message
    key = results.get("key")
    if isinstance(key, str) and key not in datamap:
        yield "item_results.key", f"{key!r} is not a datamap key"


def expression_problem(expression: str) -> str | None:
    """Why a JMESPath expression does not compile (with the position), or None."""
    try:
        jmespath.compile(expression)
    except ParseError as e:
        return f"invalid JMESPath at position {e.lex_position}: {_first_line(e)}"
    except EXPRESSION_ERRORS as e:
        return f"invalid JMESPath: {type(e).__name__}: {_first_line(e)[:200]}"
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
        except EXPRESSION_ERRORS as e:
            raise MappingError(f"body failed: {type(e).__name__}: {_first_line(e)[:200]}") from e
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
        self._seen: dict[str, bool] = {}
        """Names already matched (a job sees the same few header names again and again)."""

    def matches(self, name: str) -> bool:
        seen = self._seen.get(name)
        if seen is None:
            seen = any(fnmatch.fnmatchcase(name.lower(), p) for p in self.patterns)
            if len(self._seen) < 1000:
                self._seen[name] = seen
        return seen

    def headers(self, kafka_headers: dict[str, Any]) -> dict[str, str]:
        """The matching headers whose values HTTP can carry (Latin-1, no line break)."""
        if not self.patterns:
            return {}
        chosen = {}
        for name, value in kafka_headers.items():
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                continue
            if self.matches(name):
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
            return _true(self.expression.search(document))
        except EXPRESSION_ERRORS:
            return False


class ItemResults:
    """A batch's answer read per record (``item_results``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.items = jmespath.compile(spec["items"]) if "items" in spec else None
        self.ok = jmespath.compile(spec["ok"]) if "ok" in spec else None
        self.errors = jmespath.compile(spec["errors"]) if "errors" in spec else None
        self.key: str | None = spec.get("key")

    def read(self, status: int, headers: dict[str, str], body: bytes,
             keys: list[Any]) -> list[tuple[ItemFailure | None, Any]]:
        """Per record of the batch (``keys``: each record's ``key`` value): None when it
        succeeded, else why, with its item's status; and its item (``items``), or None."""
        document = {"status": status, "headers": headers, "body": answer_body(body)}
        try:
            if self.errors is not None:
                return [(failure, None) for failure in self._by_key(document, keys)]
            return self._by_item(document, len(keys))
        except EXPRESSION_ERRORS as e:
            return [(ItemFailure(f"item_results failed: {_first_line(e)[:200]}"), None)] * len(
                keys)

    def _by_key(self, document: dict[str, Any], keys: list[Any]) -> list[ItemFailure | None]:
        assert self.errors is not None
        failed = self.errors.search(document) or []
        failed = {json.dumps(k) for k in (failed if isinstance(failed, list) else [failed])}
        return [ItemFailure(f"item_results: the answer names {self.key} {json.dumps(k)} as "
                            "failed") if json.dumps(k) in failed else None for k in keys]

    def _by_item(self, document: dict[str, Any],
                 count: int) -> list[tuple[ItemFailure | None, Any]]:
        assert self.items is not None and self.ok is not None
        items = self.items.search(document)
        if not isinstance(items, list) or len(items) != count:
            found = len(items) if isinstance(items, list) else "no list"
            return [(ItemFailure(f"item_results: the answer has {found} items for {count} "
                                 "records"), None)] * count
        return [(None if _true(self.ok.search(item)) else ItemFailure(
                    "item_results: not ok: " + _ENCODER.encode(item)[:500], _item_status(item)),
                 item) for item in items]


@dataclass(frozen=True)
class ItemFailure:
    """Why one record of a batch failed, and the status its item gave, when it gave one."""

    reason: str
    status: int | None = None


def _item_status(item: Any) -> int | None:
    """An item's own status: ``status``, or ``response.status`` (a FHIR batch-response entry:
    ``"503 Service Unavailable"``), as a number."""
    if not isinstance(item, dict):
        return None
    found = item.get("status")
    if found is None and isinstance(item.get("response"), dict):
        found = item["response"].get("status")
    text = str(found) if isinstance(found, int | str) else ""
    return int(text[:3]) if text[:3].isdigit() else None


def _true(value: Any) -> bool:
    """JMESPath's truth: not false, null or empty."""
    return not any(value is v or (type(value) is type(v) and value == v) for v in _NO_VALUE)


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
