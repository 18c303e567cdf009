"""What a Celery worker does with one ``deliver`` task, independent of Celery itself."""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from rest_consumer.config import Settings
from rest_consumer.decoding import decode
from rest_consumer.delivery import Sender, backoff
from rest_consumer.destinations import DestinationGuard
from rest_consumer.errors import (
    DecodeError,
    DeliveryError,
    MappingError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Throttled,
)
from rest_consumer.mapping import SKIP, CompiledJob, RequestSpec
from rest_consumer.oauth2 import TokenSource
from rest_consumer.outcomes import TaskOutcomes
from rest_consumer.ratelimit import RateLimiter
from rest_consumer.store import JobStore

log = logging.getLogger(__name__)

RetryPublisher = Callable[[str, str, dict[str, Any], float, "str | None"], None]


class WorkerContext:
    """Per-process state: Redis, the HTTP pool, and compiled jobs cached by hash."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=10,
                                          health_check_interval=30)
        self.store = JobStore(self.redis)
        self.sender = Sender(DestinationGuard(settings.destination_allowlist))
        self.limiter = RateLimiter(self.redis)
        self.tokens = TokenSource(self.redis, self.sender)
        self._jobs: dict[str, CompiledJob] = {}
        self._lock = threading.Lock()

    def job(self, job_id: str, job_hash: str) -> CompiledJob | None:
        """The job, from cache when the hash matches; the stored (newest) version otherwise."""
        cached = self._jobs.get(job_id)
        if cached is not None and cached.hash == job_hash:
            return cached
        stored = self.store.find(job_id)
        if stored is None:
            return None
        with self._lock:
            cached = self._jobs.get(job_id)
            if cached is None or cached.hash != stored["hash"]:
                cached = self._jobs[job_id] = CompiledJob(stored, self.settings)
        return cached


@dataclass
class _Result:
    """What happened to the records of one message in this attempt."""

    retry: list[int] = field(default_factory=list)
    retry_after: float | None = None
    delivered: int = 0
    skipped: int = 0
    failed_attempt: bool = False  # False when every retry is only a rate-limit wait
    timed_out: bool = False  # the task's soft time limit struck during this message


def deliver_messages(ctx: WorkerContext, job_id: str, job_hash: str,
                     messages: list[dict[str, Any]], publish_retry: RetryPublisher) -> None:
    """Deliver each message; one bad message never affects the others.

    Outcomes of the whole task go to Redis in one pipeline; retries are scheduled after it.
    """
    job = ctx.job(job_id, job_hash)
    if job is None:
        log.warning("job %s no longer exists; dropping %d message(s)", job_id, len(messages))
        return
    out = TaskOutcomes(job.id)
    retries: list[tuple[dict[str, Any], float]] = []
    soft_limit = ctx.settings.task_time_limits()[0]
    deadline = time.monotonic() + soft_limit
    for position, message in enumerate(messages):
        if position and deadline - time.monotonic() < min(job.timeout + 1, soft_limit / 2):
            # Not enough time left for another request within the soft limit: the rest of
            # the task goes back to the queue instead of being cut off mid-request.
            retries += [(later, 0.0) for later in messages[position:]]
            break
        try:
            retry, timed_out = _deliver_one(ctx, job, message, out)
        except SoftTimeLimitExceeded:
            _dead_letter_message(job, message, out, "exceeded the task time limit while "
                                                    "decoding")
            retry, timed_out = None, True
        if retry is not None:
            retries.append(retry)
        if timed_out:  # what this task has not started goes back to the queue, unharmed
            retries += [(later, 0.0) for later in messages[position + 1:]]
            break
    pipe = ctx.redis.pipeline(transaction=False)
    out.write(pipe)
    pipe.execute()
    for message, delay in retries:
        publish_retry(job.id, job.hash, message, delay, job.queue)


def _dead_letter_message(job: CompiledJob, message: dict[str, Any], out: TaskOutcomes,
                         reason: str) -> None:
    _log_failure(job.id, message, None, None, reason)
    out.dead_letter(message, None, reason)
    out.record_final(message)


def _deliver_one(ctx: WorkerContext, job: CompiledJob, message: dict[str, Any],
                 out: TaskOutcomes) -> tuple[tuple[dict[str, Any], float] | None, bool]:
    """Deliver one message's records; returns the retry to schedule, if any, and whether
    the task's time limit struck."""
    try:
        decoded = decode(_b64(message.get("v")), ctx.settings.decode_limits)
    except DecodeError as e:
        _dead_letter_message(job, message, out, f"decode: {e}")
        return None, False
    result = _Result()
    indexes = [i for i in message.get("i") or range(len(decoded.records))
               if i < len(decoded.records)]
    for position, index in enumerate(indexes):
        try:
            _deliver_record(ctx, job, message, decoded.schema, decoded.records[index], index,
                            result, out)
        except SoftTimeLimitExceeded:
            result.retry.extend(indexes[position + 1:])  # not started: retried, unharmed
            result.timed_out = True
            break
    out.count("delivered", result.delivered)
    out.count("skipped", result.skipped)
    if not result.retry:
        out.record_final(message)
        return None, result.timed_out
    attempt = int(message.get("a", 0))
    delay = backoff(attempt, job.retry_backoff, job.retry_backoff_max, result.retry_after)
    if result.failed_attempt:
        out.count("retried", len(result.retry))
        attempt += 1
    if result.timed_out and not result.failed_attempt:
        delay = 0.0
    return ({**message, "a": attempt, "i": result.retry}, delay), result.timed_out


def _deliver_record(ctx: WorkerContext, job: CompiledJob, message: dict[str, Any], schema: Any,
                    record: Any, index: int, result: _Result, out: TaskOutcomes) -> None:
    meta = _meta(message, index)
    request: RequestSpec | None = None
    values: dict[str, Any] = {}
    try:
        record = job.governed(schema, record, meta)
        if record is SKIP:
            result.skipped += 1
            return
        values = job.evaluate(schema, record, meta)
        request = job.build(values, f"{job.id}:{message['t']}:{message['p']}:{message['o']}:"
                                    f"{index}")
        _send(ctx, job, request, out)
        result.delivered += 1
    except Throttled as e:
        result.retry.append(index)
        result.retry_after = max(result.retry_after or 0.0, e.wait)
    except MappingError as e:
        _fail(out, job, message, index, values, f"mapping: {e}")
    except RetryableDeliveryError as e:
        _retry_or_give_up(job, message, index, values, e, request, result, out)
    except PermanentDeliveryError as e:
        _fail(out, job, message, index, values, e.reason, e, request)
    except SoftTimeLimitExceeded:
        if request is None:
            # Stuck before a request existed: the record itself is the culprit (e.g. a
            # JSONPath regex that backtracks for ever).
            _fail(out, job, message, index, values, "exceeded the task time limit while "
                                                    "mapping")
        else:  # stuck sending: the endpoint was slow, which a retry may cure
            result.retry.append(index)
        raise
    except Exception as e:  # one record's fault never sinks the others
        log.warning("job %s: unexpected %s on %s[%s]@%s index %s", job.id, type(e).__name__,
                    message["t"], message["p"], message["o"], index, exc_info=True)
        _fail(out, job, message, index, values, f"{type(e).__name__}: {_short(str(e))}",
              request=request)


def _retry_or_give_up(job: CompiledJob, message: dict[str, Any], index: int,
                      values: dict[str, Any], error: RetryableDeliveryError,
                      request: RequestSpec | None, result: _Result, out: TaskOutcomes) -> None:
    if int(message.get("a", 0)) >= job.max_retries:
        _fail(out, job, message, index, values, f"gave up after {job.max_retries} "
              f"retries: {error.reason}", error, request)
        return
    _log_failure(job.id, message, index, values.get("id"), f"{error.reason}; will retry",
                 level=logging.INFO)
    result.retry.append(index)
    result.failed_attempt = True
    if error.retry_after is not None:
        result.retry_after = max(result.retry_after or 0.0, error.retry_after)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _send(ctx: WorkerContext, job: CompiledJob, request: RequestSpec,
          out: TaskOutcomes) -> None:
    """Send within the job's rate limit, with its OAuth2 token (renewed once on a 401)."""
    if job.ratelimit:
        wait, reserved = ctx.limiter.reserve(job.id, job.ratelimit)
        if not reserved:
            raise Throttled(wait)
        time.sleep(wait)
    if job.oauth2 is None:
        _timed_send(ctx, job, request, out)
        return
    authorization = ctx.tokens.authorization(job.id, job.hash, job.oauth2)
    try:
        _timed_send(ctx, job, _with_auth(request, authorization), out)
    except PermanentDeliveryError as e:
        if e.status != 401:
            raise
        authorization = ctx.tokens.authorization(job.id, job.hash, job.oauth2,
                                                 refused=authorization)
        _timed_send(ctx, job, _with_auth(request, authorization), out)


def _timed_send(ctx: WorkerContext, job: CompiledJob, request: RequestSpec,
                out: TaskOutcomes) -> None:
    started = time.perf_counter()
    try:
        ctx.sender.send(request, job.timeout, job.retry_statuses)
    finally:
        out.observe_latency(time.perf_counter() - started)


def _with_auth(request: RequestSpec, authorization: str) -> RequestSpec:
    return dataclasses.replace(request, secret_headers={"Authorization": authorization})


def _fail(out: TaskOutcomes, job: CompiledJob, message: dict[str, Any], index: int,
          values: dict[str, Any], reason: str, error: DeliveryError | None = None,
          request: RequestSpec | None = None) -> None:
    _log_failure(job.id, message, index, values.get("id"), reason)
    out.dead_letter(message, index, reason,
                         status=error.status if error else None,
                         excerpt=error.excerpt if error else "",
                         request=request.public() if request else None,
                         record_id=values.get("id"))


def _log_failure(job_id: str, message: dict[str, Any], index: int | None, record_id: Any,
                 reason: str, level: int = logging.WARNING) -> None:
    log.log(level, "job %s %s[%s]@%s index=%s id=%s: %s", job_id, message["t"], message["p"],
            message["o"], index, record_id, reason,
            extra={"job": job_id, "topic": message["t"], "partition": message["p"],
                   "offset": message["o"], "index": index})


def _meta(message: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "topic": message["t"], "partition": message["p"], "offset": message["o"],
        "key": _text(_b64(message.get("k"))), "timestamp": message.get("ts"),
        "headers": {k: _text(_b64(v)) for k, v in message.get("h") or []},
        "index": index,
    }


def _b64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def _text(value: bytes | None) -> str | None:
    """UTF-8 where it can be; else the base64 text."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()
