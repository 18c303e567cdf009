"""Sending one record's request, on a lane thread: rate limit, OAuth2, the HTTP exchange, and
the outcome it leads to. Never raises (but the soft time limit, in a task's own thread):
every failure is that record's outcome."""

from __future__ import annotations

import dataclasses
import logging
import time

from celery.exceptions import SoftTimeLimitExceeded

from rest_consumer.core.batches import Batch
from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError, Throttled
from rest_consumer.core.mapping import CompiledJob, RequestSpec
from rest_consumer.core.records import Outcome, Pending, log_failure
from rest_consumer.worker.delivery import Sender
from rest_consumer.worker.http1 import Response
from rest_consumer.worker.oauth2 import TokenSource
from rest_consumer.worker.ratelimit import RateLimiter

log = logging.getLogger("rest_consumer.worker.execution")


def send(sender: Sender, limiter: RateLimiter, tokens: TokenSource, job: CompiledJob,
         item: Pending, wait_until: float, end_by: float) -> Outcome:
    """The outcome of sending ``item``: delivered, a retry, or a dead letter. A rate-limit
    wait past ``wait_until`` (monotonic) is not taken here, and the request's timeout ends by
    ``end_by``: the record is retried instead."""
    started: float | None = None
    try:
        _wait_for_rate_limit(limiter, job, wait_until)
        timeout = min(job.timeout, end_by - time.monotonic())
        if timeout < 1:
            return Outcome.deferred(item.index)
        started = time.perf_counter()
        response = _authorized_send(sender, tokens, job, item.request, timeout)
        latency = time.perf_counter() - started
        if not isinstance(item, Batch) and job.responses != "all":
            return Outcome(item.index, "delivered", latency=latency)
        # read per record (``item_results``) or written to the responses topic
        return Outcome(item.index, "delivered", latency=latency, request=item.request,
                       record_id=item.record_id,
                       answer=(response.status, response.headers(), response.body))
    except Throttled as e:
        return Outcome(item.index, "retry", retry_after=e.wait)
    except RetryableDeliveryError as e:
        return _retry_or_give_up(job, item, e, _elapsed(started))
    except PermanentDeliveryError as e:
        return Outcome.dead(item.index, e.reason, error=e, request=item.request,
                            record_id=item.record_id, latency=_elapsed(started))
    except SoftTimeLimitExceeded:  # sent in the task's thread: the task's time is up
        raise
    except Exception as e:  # one record's fault never sinks the others
        log.warning("job %s: unexpected %s sending %s index %s", job.id, type(e).__name__,
                    item.message.describe(), item.index, exc_info=True)
        return Outcome.dead(item.index, f"{type(e).__name__}: {e}", request=item.request,
                            record_id=item.record_id)


def _elapsed(started: float | None) -> float | None:
    return None if started is None else time.perf_counter() - started


def _wait_for_rate_limit(limiter: RateLimiter, job: CompiledJob, wait_until: float) -> None:
    if job.ratelimit:
        wait, reserved = limiter.reserve(job.id, job.ratelimit,
                                         max(0.0, wait_until - time.monotonic()))
        if not reserved:
            raise Throttled(wait)
        time.sleep(wait)


def _authorized_send(sender: Sender, tokens: TokenSource, job: CompiledJob,
                     request: RequestSpec, timeout: float) -> Response:
    """Send, with the job's OAuth2 token when it has one (renewed once on a 401), signed
    afresh for every attempt when the job signs."""
    if job.oauth2 is None:
        return sender.answer(request, timeout, job.retry_statuses, job.tls,
                             _signature(job, request), job.success_when)
    authorization = tokens.authorization(job.id, job.hash, job.oauth2, tls=job.tls)
    try:
        return sender.answer(_with_auth(request, authorization), timeout, job.retry_statuses,
                             job.tls, _signature(job, request), job.success_when)
    except PermanentDeliveryError as e:
        if e.status != 401:
            raise
        authorization = tokens.authorization(job.id, job.hash, job.oauth2,
                                             refused=authorization, tls=job.tls)
        return sender.answer(_with_auth(request, authorization), timeout, job.retry_statuses,
                             job.tls, _signature(job, request), job.success_when)


def _signature(job: CompiledJob, request: RequestSpec) -> dict[str, str] | None:
    """This attempt's signature headers (a fresh timestamp each time), when the job signs."""
    if job.signer is None:
        return None
    return job.signer.headers(request.headers.get("Idempotency-Key", ""), request.body)


def _with_auth(request: RequestSpec, authorization: str) -> RequestSpec:
    return dataclasses.replace(request, secret_headers={**request.secret_headers,
                                                        "Authorization": authorization})


def _retry_or_give_up(job: CompiledJob, item: Pending, error: RetryableDeliveryError,
                      latency: float | None) -> Outcome:
    if item.message.attempt >= job.max_retries:
        return Outcome.dead(item.index, f"gave up after {job.max_retries} retries: "
                                        f"{error.reason}", error=error, request=item.request,
                            record_id=item.record_id, latency=latency)
    log_failure(job.id, item.message, item.index, item.record_id, f"{error.reason}; will retry",
                level=logging.INFO)
    return Outcome(item.index, "retry", error.reason, error=error,
                   retry_after=error.retry_after, failed=True, latency=latency)
