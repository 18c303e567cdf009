"""What a Celery worker does with one ``deliver`` task, once ``task`` has it.

A task's records are decoded and mapped in the task's own thread (where the soft time limit
can interrupt a runaway JSONPath), then sent concurrently on lanes (see ``lanes``), within
the job's ``concurrency`` across every worker. Every record ends with one outcome; the task's
outcomes go to Redis in one pipeline, then its retries are scheduled.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import redis
from celery.exceptions import SoftTimeLimitExceeded
from confluent_kafka import KafkaException

from rest_consumer.broker import acks
from rest_consumer.broker.roundtrip import RoundTrip
from rest_consumer.core.batches import Batch, Batcher
from rest_consumer.core.config import Settings
from rest_consumer.core.decoding import decode
from rest_consumer.core.destinations import DestinationGuard
from rest_consumer.core.errors import DecodeError, MappingError
from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome, Pending, log_failure
from rest_consumer.state import outstanding
from rest_consumer.state.deadletters import DeadLetterWriter
from rest_consumer.state.responses import ResponseWriter
from rest_consumer.state.retries import Retry, schedule
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import Refusal, TopicError
from rest_consumer.worker.claims import TaskClaims
from rest_consumer.worker.delivery import Sender, backoff
from rest_consumer.worker.lanes import Lanes, Sent
from rest_consumer.worker.oauth2 import TokenSource
from rest_consumer.worker.outcomes import TaskOutcomes
from rest_consumer.worker.permits import Permits
from rest_consumer.worker.progress import Progress
from rest_consumer.worker.ratelimit import RateLimiter
from rest_consumer.worker.responding import TaskResponses, write_responses
from rest_consumer.worker.sending import send

log = logging.getLogger(__name__)

SEND_THREADS = 256
"""Lane threads per worker process: the most requests one process has in flight."""

DEAD_LETTER_RETRY_SECONDS = 10.0
"""How long dead letters Kafka refused wait before their records are tried again."""
REDIS_OUTAGE_SECONDS = 20.0
"""How long a task's first round trip waits for Redis to come back (a restart, a failover);
its last one waits as long as the hard time limit allows."""
_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


class RedisOutage(Exception):
    """Redis stayed unreachable while a task had to record its claim or its outcomes: the
    task goes back to its queue (``task``), to run again once Redis is back."""


class WorkerContext:
    """Per-process state: Redis, the HTTP client and its lanes, and compiled jobs by hash."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = settings.redis_client(socket_timeout=10, health_check_interval=30)
        self.store = JobStore.for_settings(self.redis, settings)
        self.sender = Sender(DestinationGuard(settings.destination_allowlist))
        self.limiter = RateLimiter(self.redis)
        self.tokens = TokenSource(self.redis, self.sender)
        # A reserved copy waits at most about prefetch x the hard limit (< 3 x the timeout).
        self.claims = TaskClaims(self.redis, 4 * settings.visibility_timeout)
        self.dead_letters = DeadLetterWriter(settings.kafka_client_config(),
                                             settings.consumer_group_prefix)
        self.responses = ResponseWriter(settings.kafka_client_config(),
                                        settings.consumer_group_prefix,
                                        settings.response_max_bytes)
        self.lanes = Lanes(Permits(self.redis),
                           ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="send"))
        self.acks_own_messages = settings.tasks_settle_themselves()
        """Whether a task acknowledges its own message (``acks``): the fast path is on and
        the broker is this Redis."""
        self._jobs: dict[str, CompiledJob] = {}
        self._batchers: dict[str, tuple[str, Batcher]] = {}
        self._lock = threading.Lock()

    def job(self, job_id: str, job_hash: str) -> CompiledJob | None:
        """The job, from cache when the hash matches; the stored (newest) version otherwise."""
        cached = self._jobs.get(job_id)
        if cached is not None and cached.hash == job_hash:
            return cached
        stored = self.store.find(job_id)
        if stored is None and self.store.ensure_loaded():  # Redis had lost its copy
            stored = self.store.find(job_id)
        if stored is None:
            return None
        with self._lock:
            cached = self._jobs.get(job_id)
            if cached is None or cached.hash != stored["hash"]:
                cached = self._jobs[job_id] = CompiledJob(stored, self.settings)
        return cached

    def batcher(self, job: CompiledJob) -> Batcher | None:
        """The job's ``request_batch``, compiled once per version; None without one."""
        spec = job.job.get("request_batch")
        if spec is None:
            return None
        cached = self._batchers.get(job.id)
        if cached is None or cached[0] != job.hash:
            cached = self._batchers[job.id] = (job.hash, Batcher(
                spec, job.id, job.constant, job.ordered, job.job.get("item_results"),
                job.retry_statuses, job.max_retries, job.forwarding,
                answers=job.responses != "none"))
        return cached[1]


@dataclass(frozen=True)
class Run:
    """A claimed task: its messages not yet final, the claim, and the permits it took."""

    messages: list[TaskMessage]
    claim: str
    permits: list[str]


def deliver_messages(ctx: WorkerContext, job: CompiledJob, run: Run) -> bool:
    """Deliver each message's records; one bad record never affects the others.

    Outcomes and retries go to Redis in one pipeline, so what a task learned is recorded
    whole or (if the worker dies first) not at all, and the task is then run again. The
    claim's done mark, the release of the permits the task still holds, and the task's own
    ack (``acks``) join it. Returns whether that ack removed the task's unacked record.
    """
    answers = TaskResponses(job.responses)
    messages = answers.carry(run.messages)
    soft_limit, hard_limit = ctx.settings.task_time_limits()
    started = time.monotonic()
    deadline = started + soft_limit
    outcomes: dict[int, list[Outcome]] = {i: [] for i in range(len(messages))}
    pending: list[Pending] = []
    deferred = _prepare_all(ctx, job, messages, outcomes, pending)
    stop_at = deadline - min(job.timeout + 1, soft_limit / 2)
    # No request may outlive the hard limit: a hanging endpoint times out and is retried,
    # instead of the task being killed.
    end_by = started + hard_limit - 2

    def send_one(item: Pending) -> Outcome:
        return send(ctx.sender, ctx.limiter, ctx.tokens, job, item, stop_at, end_by)

    batcher = ctx.batcher(job)
    items, unsendable = _batched(batcher, pending)
    progress = (Progress(ctx.redis, job, messages, outcomes, pending,
                         partial(_each_record, batcher), partial(_conclude, job))
                if Progress.applies_to(job, messages) else None)
    sent, permits = ctx.lanes.send_all(job, items, send_one, stop_at, run.permits, progress)
    for item, outcome in [*unsendable, *_each_record(batcher, sent)]:
        outcomes[item.position].append(outcome)
    out = TaskOutcomes(job.id, ordered=job.ordered)
    done = deferred | (progress.recorded if progress is not None else set())
    retries = [retry for position, message in enumerate(messages) if position not in done
               if (retry := _conclude(job, message, outcomes[position], out)) is not None]
    retries += [(messages[position], 0.0) for position in sorted(deferred)]
    for position, message in enumerate(messages):
        answers.observe(message, outcomes[position])
    lettered = _write_dead_letters(ctx, job.id, out)
    answers.withdraw([message for message, _ in lettered])
    retries = write_responses(ctx.responses, job.id, answers, out, retries + lettered)
    return _close(ctx, job, run, out, retries, permits, sent, end_by)


def _batched(batcher: Batcher | None,
             pending: list[Pending]) -> tuple[list[Pending], list[tuple[Pending, Outcome]]]:
    """What the lanes send (batches, with ``request_batch``), and the records of batches whose
    body could not be made, with their outcomes."""
    if batcher is None:
        return pending, []
    batches = batcher.batches(pending)
    unsendable = [pair for b in batches if b.failure for pair in batcher.unsendable(b)]
    return [b for b in batches if not b.failure], unsendable


def _each_record(batcher: Batcher | None,
                 sent: list[tuple[Pending, Outcome]]) -> list[tuple[Pending, Outcome]]:
    """The lanes' outcomes, a batch's spread over its records."""
    if batcher is None:
        return sent
    return [pair for item, outcome in sent
            for pair in (batcher.outcomes(item, outcome) if isinstance(item, Batch)
                         else [(item, outcome)])]


def _close(ctx: WorkerContext, job: CompiledJob, run: Run, out: TaskOutcomes,
           retries: list[tuple[TaskMessage, float]], permits: list[str], sent: Sent,
           end_by: float) -> bool:
    """The task's last round trip: its outcomes, retries, permits, the claim's done mark and
    its own ack (``acks``), sent again while Redis is away (until ``end_by``, monotonic):
    what the task learned is worth waiting for, since a task that cannot record it is run
    again whole. Returns whether the ack removed the task's unacked record."""
    trip = RoundTrip(ctx.redis, own_connection=True)
    out.write(trip)
    for message, delay in retries:
        schedule(trip, Retry(job.id, job.hash, job.queue, message), delay)
    ctx.lanes.give_back(trip, job, permits, sent)
    ctx.claims.finish(run.claim, trip)
    if ctx.acks_own_messages:
        with trip.section("ack"):
            acks.queue(trip, run.claim)
    execute_through_outage(trip, end_by, job.id)
    return ctx.acks_own_messages and acks.settled(trip.replies("ack"))


def execute_through_outage(trip: RoundTrip, deadline: float, job_id: str) -> None:
    """``trip.execute()``, again while Redis is unreachable (a restart takes seconds),
    until ``deadline`` (monotonic); then ``RedisOutage``. Sending a trip again is safe: its
    marks, sets and removals may run twice; only a counter may count twice, when Redis ran
    the trip and its reply was lost."""
    delay = 0.1
    while True:
        try:
            trip.execute()
            return
        except _OUTAGE_ERRORS as e:
            if time.monotonic() + delay >= deadline:
                raise RedisOutage(f"Redis unreachable: {e}") from e
            log.warning("job %s: Redis unreachable (%s); trying again in %.1f s", job_id, e,
                        delay)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def start_run(ctx: WorkerContext, task_id: str, job: CompiledJob,
              messages: list[TaskMessage]) -> Run | None:
    """Claim the task (``claims``), learn which of its messages are already final, and take
    its first request permits, in one round trip; None when another run has or had it.

    A message already final was sent again by a reader that rewound (Redis lost its data, a
    stalled watermark) while a worker still held and then finished the original: it is
    dropped. Replays are final by definition and always go.
    """
    checked = [(m.topic, m.partition, m.offset) for m in messages if not m.replay]
    trip = RoundTrip(ctx.redis, own_connection=True)
    with trip.section("final"):
        outstanding.queue_final_check(trip, job.id, checked)
    with trip.section("permits"):
        ctx.lanes.queue_first_permits(trip, job, len(messages))
    with trip.section("claim"):
        lease = ctx.claims.queue_claim(trip, task_id)
    execute_through_outage(trip, time.monotonic() + REDIS_OUTAGE_SECONDS, job.id)
    permits = ctx.lanes.took(job, trip.replies("permits")[0])
    if not ctx.claims.claimed(task_id, lease, trip.replies("claim")[0]):
        release = RoundTrip(ctx.redis, own_connection=True)
        ctx.lanes.give_back(release, job, permits)
        release.execute()
        return None
    skip = outstanding.final_among(checked, trip.replies("final"))
    if skip:
        log.info("job %s: %d message(s) already final elsewhere; not sent again", job.id,
                 len(skip))
        messages = [m for m in messages
                    if m.replay or (m.topic, m.partition, m.offset) not in skip]
    return Run(messages, task_id, permits)


def _write_dead_letters(ctx: WorkerContext, job_id: str,
                        out: TaskOutcomes) -> list[tuple[TaskMessage, float]]:
    """Kafka holds the dead letters before their messages count as final; if it will not
    take them now, those messages come back later (as retries) instead of being lost."""
    try:
        results = ctx.dead_letters.write(job_id, out.letters)
    except (TopicError, KafkaException) as e:
        results = [Refusal(str(e), True)] * len(out.letters)
    refused = [r for r in results if isinstance(r, Refusal)]
    if refused:
        log.error("job %s: Kafka did not take %d dead letter(s) (%s); their records are "
                  "retried in %.0f s", job_id, len(refused), refused[0].reason,
                  DEAD_LETTER_RETRY_SECONDS)
    return [(message, DEAD_LETTER_RETRY_SECONDS) for message in out.settle_letters(results)]


def _prepare_all(ctx: WorkerContext, job: CompiledJob, messages: list[TaskMessage],
                 outcomes: dict[int, list[Outcome]], pending: list[Pending]) -> set[int]:
    """Decode and map every message; returns the positions of those not reached in time."""
    for position, message in enumerate(messages):
        if message.indexes == ():  # back only for its responses (``responding``)
            continue
        try:
            _prepare(ctx, job, position, message, outcomes[position], pending)
        except SoftTimeLimitExceeded:
            # What this task has not reached goes back to the queue, unharmed.
            return set(range(position + 1, len(messages)))
    return set()


def _prepare(ctx: WorkerContext, job: CompiledJob, position: int, message: TaskMessage,
             outcomes: list[Outcome], pending: list[Pending]) -> None:
    if message.value is None and job.on_tombstone is not None:
        _prepare_tombstone(job, position, message, outcomes, pending)
        return
    try:
        decoded = decode(message.value, ctx.settings.decode_limits)
    except DecodeError as e:
        outcomes.append(Outcome.dead(None, f"decode: {e}"))
        return
    except SoftTimeLimitExceeded:
        outcomes.append(Outcome.dead(None, "exceeded the task time limit while decoding"))
        raise
    indexes = message.indexes if message.indexes is not None else range(len(decoded.records))
    for index in indexes:
        if index >= len(decoded.records):
            continue
        try:
            prepared = job.prepare(decoded.schema, decoded.records[index], message.meta(index),
                                   message.idempotency_key(job.id, index))
        except MappingError as e:
            outcomes.append(Outcome.dead(index, f"mapping: {e}"))
            continue
        except SoftTimeLimitExceeded:
            # The record in hand is the culprit (e.g. a JSONPath regex that backtracks for
            # ever); the records after it go back to the queue.
            outcomes.append(Outcome.dead(index, "exceeded the task time limit while mapping"))
            outcomes += [Outcome.deferred(i) for i in indexes if i > index]
            raise
        except Exception as e:  # one record's fault never sinks the others
            log.warning("job %s: unexpected %s mapping %s index %s", job.id, type(e).__name__,
                        message.describe(), index, exc_info=True)
            outcomes.append(Outcome.dead(index, f"{type(e).__name__}: {e}"))
            continue
        if prepared.request is None:
            outcomes.append(Outcome.skipped(index))
        else:
            pending.append(Pending(position, message, index, prepared.request,
                                   prepared.record_id,
                                   job.record_key(decoded.schema, decoded.records[index]),
                                   prepared.values))


def _prepare_tombstone(job: CompiledJob, position: int, message: TaskMessage,
                       outcomes: list[Outcome], pending: list[Pending]) -> None:
    """A tombstone (null value) of a job that says what to do with one: skipped, or a
    ``DELETE``. A job without ``on_tombstone`` dead-letters it, as before."""
    if job.on_tombstone == "skip":
        outcomes.append(Outcome.skipped(0))
        return
    try:
        prepared = job.prepare_tombstone(message.meta(0), message.idempotency_key(job.id, 0))
    except MappingError as e:
        outcomes.append(Outcome.dead(0, f"mapping: {e}"))
        return
    assert prepared.request is not None
    pending.append(Pending(position, message, 0, prepared.request, prepared.record_id,
                           values=prepared.values))


def _conclude(job: CompiledJob, message: TaskMessage, outcomes: list[Outcome],
              out: TaskOutcomes) -> tuple[TaskMessage, float] | None:
    """Record what happened to one message; returns its retry, if any."""
    retry: list[int] = []
    failed, asked = False, None
    for outcome in outcomes:
        if outcome.latency is not None:
            out.observe_latency(outcome.latency)
        if outcome.kind == "delivered":
            out.count("delivered")
        elif outcome.kind == "skipped":
            out.count("skipped")
        elif outcome.kind == "dead":
            log_failure(job.id, message, outcome.index, outcome.record_id, outcome.reason)
            out.dead_letter(message, outcome)
        else:
            retry.append(outcome.index)  # type: ignore[arg-type]
            failed = failed or outcome.failed
            if outcome.retry_after is not None:
                asked = max(asked or 0.0, outcome.retry_after)
    if not retry:
        out.record_final(message)
        return None
    if failed:  # the records that failed an attempt (not those merely not reached)
        out.count("retried", sum(1 for o in outcomes if o.kind == "retry" and o.failed))
        delay = backoff(message.attempt, job.retry_backoff, job.retry_backoff_max, asked)
    else:  # only waits (rate limit) or work the task had no time for
        delay = asked or 0.0
    return message.retry(sorted(retry), failed), delay
