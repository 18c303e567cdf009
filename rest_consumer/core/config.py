"""Settings: what the service reads from the environment, once per process (``from_env``).

The development tools (``devtools``: cache and log folders) and the Flower command's
``FLOWER_BASIC_AUTH`` hand-off in ``cli`` read a few variables of their own; nothing of the
service's behaviour does."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from rest_consumer.core import redisconn
from rest_consumer.core.decoding import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_RECORDS,
    Limits,
)
from rest_consumer.core.destinations import Allowlist
from rest_consumer.core.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 9013
DEFAULT_JOBS_DIR = "config/jobs"
DEFAULT_CONSUMER_GROUP_PREFIX = "rest-consumer"
DEFAULT_RECONCILE_INTERVAL = 30.0
# Celery's Redis transport redelivers a task unacknowledged for this long: a dead worker's
# tasks come back after it. Retries wait in Redis, not in workers, and a task's hard time limit
# (3/4 of this) ends every run before it, so no running task is ever delivered twice.
DEFAULT_VISIBILITY_TIMEOUT = 45.0
# Last resort when a watermark stalls (e.g. Redis lost tasks without losing its data):
# longer than the visibility timeout, so Celery redelivers first (DESIGN §4).
DEFAULT_REDISPATCH_AFTER = 300.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_RESPONSE_MAX_BYTES = 64 * 1024
MIN_PASSWORD_CHARS = 12
MIN_TOKEN_CHARS = 16
# Passwords shipped in examples and docs, or guessed first: refused whatever their length.
KNOWN_DEFAULT_PASSWORDS = frozenset({
    "change-me", "changeme", "change_me", "admin", "password", "secret", "rest-consumer",
    "flower", "letmein", "123456", "12345678", "123456789012", "passwordpassword",
    "adminadminadmin", "change-me-please", "s3cret",
})
DEFAULT_QUEUE = "rest_consumer"

# KAFKA_* variables that are ours, not librdkafka settings.
_NOT_LIBRDKAFKA = {"KAFKA_BOOTSTRAP_SERVERS"}


@dataclass(frozen=True)
class Settings:
    """Every setting of every process; build it with :func:`from_env`."""

    # (fields that may hold a secret stay out of repr: a logged Settings must not leak it)
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    celery_broker_url: str = field(default="", repr=False)
    """Empty: the Celery broker is ``redis_url``."""
    redis_sentinel_master: str = "mymaster"
    """The Sentinel group's master, for ``sentinel://`` URLs (``redisconn``)."""
    kafka_bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    api_user: str = ""
    api_password: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    """A bearer token that reads ``/metrics`` only (a Prometheus scraper needs no admin)."""
    jobs_dir: Path = Path(DEFAULT_JOBS_DIR)
    consumer_group_prefix: str = DEFAULT_CONSUMER_GROUP_PREFIX
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    redispatch_after: float = DEFAULT_REDISPATCH_AFTER
    destination_allowlist: Allowlist = field(default_factory=Allowlist)
    decode_limits: Limits = field(default_factory=Limits)
    worker_send_events: bool = True
    fast_transport: bool = True
    """The broker's fast path (``broker``): off, plain ``send_task`` and kombu's own ack."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    response_max_bytes: int = DEFAULT_RESPONSE_MAX_BYTES
    """The most of an answer's body a ``responses`` record keeps (job field ``responses``)."""
    log_level: str = "INFO"
    log_format: str = "text"
    # Aether governance defaults for jobs that set none (names as in Aether's consumer SDK).
    mask_levels: tuple[Any, ...] = ()
    emit_level: Any = None
    emit_flag: Mapping[str, Any] | None = None

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every consumer, producer and admin client."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **self.kafka_config}

    def task_time_limits(self) -> tuple[float, float]:
        """(soft, hard) limits of one ``deliver`` run: both below the visibility timeout, so
        Redis never hands a running task to a second worker."""
        return self.visibility_timeout * 0.5, self.visibility_timeout * 0.75

    def redis_client(self, **options: Any) -> redis.Redis:
        """A client of ``REDIS_URL`` (Sentinel included); ``options`` are redis-py's."""
        return redisconn.connect(self.redis_url, self.redis_sentinel_master, **options)

    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    def tasks_settle_themselves(self) -> bool:
        """Whether a task removes its own broker record with its outcomes (``broker.acks``)
        and workers file what they hold (``broker.holders``): the fast path is on and the
        broker is ``REDIS_URL``'s Redis."""
        return self.fast_transport and self.broker_url() == self.redis_url

    def has_api_credentials(self) -> bool:
        """True when the API can authenticate anyone."""
        return bool((self.api_user and self.api_password) or self.api_token)

    def credential_problem(self) -> str | None:
        """Why the API's credentials must not be used, or None when they are fit to serve."""
        if not self.has_api_credentials():
            return "set API_USER and API_PASSWORD, or API_TOKEN: the API needs credentials"
        if self.api_password:
            problem = weak_secret_problem("API_PASSWORD", self.api_password, MIN_PASSWORD_CHARS)
            if problem:
                return problem
        if self.api_token and (problem := weak_secret_problem("API_TOKEN", self.api_token,
                                                              MIN_TOKEN_CHARS)):
            return problem
        if self.metrics_token:
            return weak_secret_problem("METRICS_TOKEN", self.metrics_token, MIN_TOKEN_CHARS)
        return None


def weak_secret_problem(name: str, value: str, min_chars: int) -> str | None:
    """Why a password or token is too weak to serve with (never quoting it), or None."""
    if value.strip().lower() in KNOWN_DEFAULT_PASSWORDS:
        return f"{name} is a known default; choose your own"
    if len(value) < min_chars:
        return f"{name} must be at least {min_chars} characters long"
    return None


def from_env(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build settings from the environment, over a ``.env`` file when one exists."""
    env = dict(read_dotenv(dotenv or Path(".env")))
    env.update(os.environ if environ is None else environ)
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    return Settings(
        redis_url=redis_url,
        celery_broker_url=env.get("CELERY_BROKER_URL", ""),
        redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER") or "mymaster",
        kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS")
        or DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
        kafka_config=_librdkafka_settings(env),
        api_host=env.get("API_HOST") or DEFAULT_API_HOST,
        api_port=int(_number(env, "API_PORT", DEFAULT_API_PORT, int)),
        api_user=env.get("API_USER", ""),
        api_password=env.get("API_PASSWORD", ""),
        api_token=env.get("API_TOKEN", ""),
        metrics_token=env.get("METRICS_TOKEN", ""),
        jobs_dir=Path(env.get("JOBS_DIR") or DEFAULT_JOBS_DIR),
        consumer_group_prefix=env.get("CONSUMER_GROUP_PREFIX") or DEFAULT_CONSUMER_GROUP_PREFIX,
        reconcile_interval=_number(env, "RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL, float),
        visibility_timeout=_number(env, "VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT, float),
        redispatch_after=_number(env, "REDISPATCH_AFTER", DEFAULT_REDISPATCH_AFTER, float),
        destination_allowlist=Allowlist.parse(
            tuple(env.get("DESTINATION_ALLOWLIST", "").split(","))),
        decode_limits=Limits(
            max_bytes=int(_number(env, "DECODE_MAX_BYTES", DEFAULT_MAX_BYTES, int)),
            max_records=int(_number(env, "DECODE_MAX_RECORDS", DEFAULT_MAX_RECORDS, int)),
            max_items=int(_number(env, "DECODE_MAX_ITEMS", DEFAULT_MAX_ITEMS, int))),
        worker_send_events=_boolean(env, "WORKER_SEND_EVENTS", True),
        fast_transport=_boolean(env, "FAST_TRANSPORT", True),
        max_body_bytes=int(_number(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int)),
        response_max_bytes=int(_number(env, "RESPONSE_MAX_BYTES", DEFAULT_RESPONSE_MAX_BYTES,
                                       int)),
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
        **_governance(env),
    )


def _governance(env: Mapping[str, str]) -> dict[str, Any]:
    levels = _json_list(env, "AETHER_MASKING_SCHEMA_LEVELS")
    emit_level = _json_value(env.get("AETHER_MASKING_SCHEMA_EMIT_LEVEL", ""))
    if levels and emit_level not in levels:
        raise ConfigError("AETHER_MASKING_SCHEMA_EMIT_LEVEL must be one of "
                          "AETHER_MASKING_SCHEMA_LEVELS")
    flag = None
    if _boolean(env, "AETHER_EMIT_FLAG_REQUIRED", False):
        flag = {"path": env.get("AETHER_EMIT_FLAG_FIELD_PATH") or "$.msg.approved",
                "values": _json_list(env, "AETHER_EMIT_FLAG_VALUES") or [True]}
    return {"mask_levels": tuple(levels), "emit_level": emit_level if levels else None,
            "emit_flag": flag}


def _json_value(raw: str) -> Any:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _json_list(env: Mapping[str, str], name: str) -> list[Any]:
    """A JSON list, or comma-separated values each read as JSON where it parses."""
    raw = env.get(name, "").strip()
    if not raw:
        return []
    value = _json_value(raw)
    if isinstance(value, list):
        return value
    return [_json_value(part) for part in raw.split(",")]


def read_dotenv(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a ``.env`` file; comments and blank lines are ignored."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _librdkafka_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {
        name[len("KAFKA_"):].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith("KAFKA_") and name not in _NOT_LIBRDKAFKA and value
    }


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value: float = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
