"""The job model: JSON Schema and semantic validation, canonical hash (secrets: ``job_secrets``)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from jsonpath_ng.ext.parser import parse as parse_jsonpath
from jsonschema import Draft202012Validator

from rest_consumer.core import bodies, destinations, job_secrets, signing, sources, tls
from rest_consumer.core.bodies import CREDENTIAL_HEADERS, RESERVED_HEADERS
from rest_consumer.core.config import DEFAULT_CONSUMER_GROUP_PREFIX
from rest_consumer.core.destinations import Allowlist
from rest_consumer.core.errors import JobValidationError
from rest_consumer.core.urltemplate import TemplateError, UrlTemplate

Job = dict[str, Any]
Problem = dict[str, str]

SCHEMA: dict[str, Any] = json.loads(
    resources.files("rest_consumer.core").joinpath("job_schema.json").read_text()
)
_VALIDATOR = Draft202012Validator(SCHEMA)
DEFAULTS: dict[str, Any] = {name: spec["default"] for name, spec in SCHEMA["properties"].items()
                            if "default" in spec}
"""Every optional field's default, from the schema: the only place defaults are spelled."""
REQUEST_BATCH_DEFAULTS: dict[str, Any] = {
    name: spec["default"] for name, spec in SCHEMA["properties"]["request_batch"][
        "properties"].items() if "default" in spec}
"""``request_batch``'s own defaults (``max_records``, ``max_bytes``, ``format``...)."""


def setting(job: Job, name: str) -> Any:
    """A job's value for an optional field, or the schema's default."""
    return job.get(name, DEFAULTS[name])

GENERATED_FIELDS = ("modified", "hash", "modified_by")
"""Written by the store: ``modified_by`` names who saved, started or stopped the job."""
# What the API adds when it shows a job; ignored on input so a GET can be POSTed back as is.
VIEW_FIELDS = ("state", "reason")
_PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def prepare(doc: Any, job_id: str, stored: Job | None,
            secret_digest: Callable[[str], str], allowlist: Allowlist | None = None,
            own_prefix: str = DEFAULT_CONSUMER_GROUP_PREFIX) -> Job:
    """Validate an incoming document and return the job to store, with ``modified`` and ``hash``.

    ``"***"`` in a secret field keeps the secret of ``stored``. Raises
    :class:`JobValidationError` listing every problem at once.
    """
    if not isinstance(doc, dict):
        raise JobValidationError([{"field": "", "message": "the job must be a JSON object"}])
    job = {k: v for k, v in doc.items() if k not in GENERATED_FIELDS + VIEW_FIELDS}
    problems: list[Problem] = []
    if job.setdefault("id", job_id) != job_id:
        problems.append({"field": "id", "message": f"must match the id in the URL ({job_id!r})"})
    problems += job_secrets.keep_stored(job, stored)
    problems += validate(job, allowlist, own_prefix)
    if problems:
        raise JobValidationError(problems)
    return stamp(job, secret_digest)


def document(job: Job) -> Job:
    """The fields a user wrote: a stored job without its generated and view fields."""
    return {k: v for k, v in job.items() if k not in GENERATED_FIELDS + VIEW_FIELDS}


def stamp(job: Job, secret_digest: Callable[[str], str]) -> Job:
    """Set the generated fields, ``hash`` and ``modified``, of a job already validated."""
    job["hash"] = job_hash(job, secret_digest)
    job["modified"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return job


def validate(job: Job, allowlist: Allowlist | None = None,
             own_prefix: str = DEFAULT_CONSUMER_GROUP_PREFIX) -> list[Problem]:
    """Every problem of a job: the schema's, and what a schema cannot check. ``own_prefix``
    names the project's own topics (``<prefix>.*``), which no job may read."""
    allowlist = allowlist or Allowlist()
    problems = [_schema_problem(e) for e in _VALIDATOR.iter_errors(job)]
    seen = {(p["field"], p["message"]) for p in problems}
    problems += [p for p in _semantic_problems(job) if (p["field"], p["message"]) not in seen]
    problems += list(_topic_problems(_typed(job, "topic", list), own_prefix))
    problems += list(_destination_problems(job, allowlist))
    return sorted(problems, key=lambda p: (p["field"], p["message"]))


_SCHEMA_MESSAGES: dict[str, Callable[[Any], str]] = {
    "type": lambda v: f"must be of type {' or '.join(v) if isinstance(v, list) else v}",
    "enum": lambda v: "must be one of " + ", ".join(json.dumps(x) for x in v),
    "pattern": lambda v: f"must match {v}",
    "minLength": lambda v: f"must be at least {v} characters long",
    "maxLength": lambda v: f"must be at most {v} characters long",
    "minimum": lambda v: f"must be at least {v}",
    "maximum": lambda v: f"must be at most {v}",
    "exclusiveMinimum": lambda v: f"must be greater than {v}",
    "minItems": lambda v: f"must have at least {v} item(s)",
    "maxItems": lambda v: f"must have at most {v} items",
    "uniqueItems": lambda v: "must not repeat an item",
    "maxProperties": lambda v: f"must have at most {v} entries",
}


def _schema_problem(error: Any) -> Problem:
    """A schema error as field and message; the message never quotes the value, which may be
    a secret (jsonschema's own messages do)."""
    path = [str(p) for p in error.absolute_path]
    describe = _SCHEMA_MESSAGES.get(error.validator)
    message = describe(error.validator_value) if describe else f"is invalid ({error.validator})"
    if error.validator == "propertyNames":
        message = "has an entry whose name is not allowed"
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        path.append(missing.group(1) if missing else "")
        message = "is required"
    elif error.validator == "additionalProperties":
        unexpected = re.findall(r"'([^']+)'", error.message)
        path.append(",".join(unexpected))
        message = "is not a job field" if len(path) == 1 else "is not allowed here"
    return {"field": ".".join(path), "message": message}


def _semantic_problems(job: Job) -> Iterator[Problem]:
    """Checks beyond the schema, each run only on fields of the right shape."""
    datamap = _typed(job, "datamap", dict)
    keys = set(datamap) | set(_typed(job, "constant", dict))
    for key, path in datamap.items():
        if isinstance(path, str) and (message := jsonpath_problem(path)) is not None:
            yield {"field": f"datamap.{key}", "message": message}
    if isinstance(job.get("url"), str):
        yield from _url_problems(job["url"], keys)
    yield from _header_problems(job, keys)
    for field in ("query_params", "json_body"):
        for i, key in enumerate(_typed(job, field, list)):
            if isinstance(key, str) and key not in datamap:
                yield {"field": f"{field}.{i}", "message": f"{key!r} is not a datamap key"}
    yield from _auth_problems(job)
    yield from _retry_on_problems(_typed(job, "retry_on", list))
    yield from _governance_problems(job)
    yield from _ordering_problems(job)
    yield from _identity_problems(job)


def _identity_problems(job: Job) -> Iterator[Problem]:
    """Signing keys that are no keys; TLS PEMs that do not parse, match or hold now; bodies,
    media types, forwarded headers and answer checks that cannot work (``bodies``)."""
    for field, message in itertools.chain(
            bodies.problems(job),
            signing.problems(_typed(job, "signing", dict)),
            tls.problems(_typed(job, "tls", dict))):
        yield {"field": field, "message": message}


def _ordering_problems(job: Job) -> Iterator[Problem]:
    path = job.get("ordering_key")
    if not isinstance(path, str):
        return
    if job.get("ordering") != "key":
        yield {"field": "ordering_key", "message": 'needs "ordering": "key"'}
    if (message := jsonpath_problem(path)) is not None:
        yield {"field": "ordering_key", "message": message}


def _header_problems(job: Job, keys: set[str]) -> Iterator[Problem]:
    for field in ("headers", "secret_headers"):
        for name, template in _typed(job, field, dict).items():
            if isinstance(template, str):
                yield from _template_problems(f"{field}.{name}", template, keys)
            if isinstance(template, str) and ("\r" in template or "\n" in template):
                yield {"field": f"{field}.{name}", "message": "may not contain a line break"}
            if name.lower() in RESERVED_HEADERS or name.lower().startswith("proxy-"):
                yield {"field": f"{field}.{name}", "message": "is set by the HTTP client (it "
                                                              "frames the request or picks its "
                                                              "host); a job may not set it"}
    for name in _typed(job, "headers", dict):
        if name.lower() in CREDENTIAL_HEADERS:
            yield {"field": f"headers.{name}", "message": "carries credentials: put it in "
                                                          "secret_headers, which are never shown"}


def _topic_problems(topics: list[Any], own_prefix: str) -> Iterator[Problem]:
    for i, topic in enumerate(topics):
        if isinstance(topic, str) and (message := sources.topic_problem(topic, own_prefix)):
            yield {"field": f"topic.{i}", "message": message}


def _destination_problems(job: Job, allowlist: Allowlist) -> Iterator[Problem]:
    for field, url in (("url", job.get("url")),
                       ("oauth2.token_url", _typed(job, "oauth2", dict).get("token_url"))):
        if isinstance(url, str) and _is_http_url(url):
            if (message := destinations.url_problem(url, allowlist)) is not None:
                yield {"field": field, "message": message}


def _typed(job: Job, field: str, kind: type) -> Any:
    """``job[field]`` when it has the expected type, else an empty one."""
    value = job.get(field)
    return value if isinstance(value, kind) else kind()


def jsonpath_problem(path: str) -> str | None:
    """Why a JSONPath does not compile, or None when it does."""
    try:
        parse_jsonpath(path)
    except Exception as e:  # noqa: BLE001 - jsonpath-ng raises lexer, parser and plain errors
        return f"invalid JSONPath {path!r}: {e}"
    return None


def template_fields(template: str) -> list[str]:
    """The placeholder names of a ``str.format`` template; ValueError when malformed."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _template_problems(field: str, template: str, keys: set[str]) -> Iterator[Problem]:
    try:
        names = template_fields(template)
    except ValueError as e:
        yield {"field": field, "message": f"malformed template: {e}"}
        return
    for name in names:
        if not _PLACEHOLDER_NAME.match(name):
            yield {"field": field, "message": f"placeholder {{{name}}} must be a plain key name"}
        elif name not in keys:
            yield {"field": field, "message": f"placeholder {{{name}}} is not a datamap or "
                                              "constant key"}


def _url_problems(url: str, keys: set[str]) -> Iterator[Problem]:
    yield from _template_problems("url", url, keys)
    try:
        UrlTemplate.compile(url)
    except TemplateError as e:
        yield {"field": "url", "message": str(e)}


def _auth_problems(job: Job) -> Iterator[Problem]:
    basic = _typed(job, "basic_auth", dict)
    if "basic_auth" in job and "password" not in basic and "pw" not in basic:
        yield {"field": "basic_auth.password", "message": "is required"}
    given = [name for name in ("basic_auth", "token", "oauth2") if name in job]
    if len(given) > 1:
        yield {"field": given[1], "message": f"use only one of {', '.join(given)}"}
    token_url = _typed(job, "oauth2", dict).get("token_url")
    if isinstance(token_url, str) and not _is_http_url(token_url):
        yield {"field": "oauth2.token_url", "message": "must be an http(s) URL"}
    elif isinstance(token_url, str) and "@" in urlsplit(token_url).netloc:
        yield {"field": "oauth2.token_url", "message": "credentials in the URL are refused"}


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _retry_on_problems(codes: list[Any]) -> Iterator[Problem]:
    for i, code in enumerate(codes):
        if not isinstance(code, str) or not re.fullmatch(r"\d{3}(-\d{3})?", code):
            continue
        low, _, high = code.partition("-")
        if high and int(high) < int(low):
            yield {"field": f"retry_on.{i}", "message": f"range {code!r} is empty"}


def _governance_problems(job: Job) -> Iterator[Problem]:
    if "mask_levels" in job and "emit_level" not in job:
        yield {"field": "emit_level", "message": "is required with mask_levels (which level "
                                                 "may be emitted?)"}
    elif "emit_level" in job and job["emit_level"] not in _typed(job, "mask_levels", list):
        yield {"field": "emit_level", "message": "must be one of mask_levels"}
    flag_path = _typed(job, "emit_flag", dict).get("path")
    if isinstance(flag_path, str) and (message := jsonpath_problem(flag_path)):
        yield {"field": "emit_flag.path", "message": message}


def retry_statuses(codes: list[str]) -> frozenset[int]:
    """The HTTP statuses named by ``retry_on`` entries such as ``"429"`` or ``"500-599"``."""
    statuses: set[int] = set()
    for code in codes:
        low, _, high = code.partition("-")
        statuses.update(range(int(low), int(high or low) + 1))
    return frozenset(statuses)


def job_hash(job: Job, secret_digest: Callable[[str], str]) -> str:
    """sha256 of the canonical job without generated fields.

    Secrets enter through ``secret_digest`` (a keyed HMAC in the store), so a changed secret
    changes the hash while the hash, which the API shows, reveals nothing about the secret.
    """
    canonical = {k: v for k, v in job.items() if k not in GENERATED_FIELDS}
    canonical = copy.deepcopy(canonical)
    for container, key, _ in job_secrets.slots(canonical):
        container[key] = secret_digest(str(container[key]))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
