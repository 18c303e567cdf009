"""Lanes: a task's requests sent concurrently, within the job's permits.

The task's thread takes as many permits as it has requests (up to the job's ``concurrency``,
less what other tasks and workers hold), starts one lane per permit on the process's thread
pool, and keeps asking for more while requests wait. A lane sends requests one after another
until none is left; the task's thread gives the permits of finished lanes back in batches.
A slow endpoint therefore gets ``concurrency`` requests in flight whatever the Celery pool,
and adding workers never floods it.

The same round trips carry the endpoint's health (``health``): the task reports what its
requests met, ends lanes when the job's adaptive limit shrank below what it holds, and stops
starting requests when the endpoint asked for a pause or the breaker opened; what it had not
started then waits in the retry schedule, no attempt counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from rest_consumer.core.mapping import CompiledJob
from rest_consumer.core.records import Outcome, Pending
from rest_consumer.state import health
from rest_consumer.state.health import Report, Verdict
from rest_consumer.worker.leases import LeaseRenewer
from rest_consumer.worker.permits import LEASE_SECONDS, RENEW_EVERY_SECONDS, Permits

log = logging.getLogger(__name__)

PERMIT_POLL_SECONDS = (0.005, 0.05)
"""How soon to ask again for permits while the job is at its limit: first, and at most."""
DRAIN_RELEASE_SECONDS = 0.005
"""Once no request waits, how long finished lanes' permits may wait to go back together."""
PROGRESS_SECONDS = 0.01
"""How often a task's thread, while its lanes send, tells ``progress`` what they sent."""
HEALTH_CHECK_SECONDS = 0.25
"""How often a task whose lanes are all busy asks anyway: a pause another worker met, or a
shrunk limit, reaches it this soon."""


Outcomes = list[tuple[Pending, Outcome]]


class Sent(Outcomes):
    """A task's records with their outcomes; the first ``reported`` were told to Redis."""

    reported = 0

    def report(self) -> Report:
        """What the outcomes not yet told say about the endpoint (now told)."""
        report, end = Report(), len(self)  # lanes may add more meanwhile: told next time
        for _, outcome in self[self.reported:end]:
            report.add(outcome)
        self.reported = end
        return report


class _Control:
    """What a task's thread tells its lanes: stop taking records, or end ``shed`` lanes."""

    def __init__(self, adaptive: bool = True,
                 progress: Callable[[Sent], None] | None = None) -> None:
        self.adaptive = adaptive
        self.progress = progress
        """Told the outcomes so far by the task's thread (``progress``)."""
        """An overload answer ends the lane that met it (its permit goes back)."""
        self.stop = threading.Event()
        self.wait = 0.0
        """Set with ``stop`` when the endpoint asked for a pause: how long records wait."""
        self._shed = 0
        self._lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        self.wait = max(self.wait, seconds)
        self.stop.set()

    def shed(self, lanes: int) -> None:
        with self._lock:
            self._shed = max(self._shed, lanes)

    def ends_a_lane(self) -> bool:
        with self._lock:
            if self._shed <= 0:
                return False
            self._shed -= 1
            return True


class Lanes:
    """Runs the sends of one task at a time per calling thread, on a shared thread pool."""

    def __init__(self, permits: Permits, pool: ThreadPoolExecutor) -> None:
        self.permits = permits
        self.pool = pool
        self.leases = LeaseRenewer("permit-renewer", RENEW_EVERY_SECONDS, self._renew_all)
        """Permit token -> its job id, renewed while held (a request may take longer than a
        lease; a dead process stops renewing, and its permits come back)."""
        self._healthy: dict[str, bool] = {}
        """Per job, the last verdict's: at full health, all-good answers go unreported."""

    def queue_first_permits(self, pipe: Any, job: CompiledJob, messages: int) -> None:
        """Queue, on the pipeline that claims a task, its first permits: one per message, up
        to the job's width (``took`` reads the reply). A task of one message then needs no
        round trip of its own for its permit."""
        self.permits.queue_trade(pipe, job, [], min(messages, _width(job)), LEASE_SECONDS)

    def took(self, job: CompiledJob, reply: Any) -> list[str]:
        """The permits of ``queue_first_permits``'s reply, now held (and renewed)."""
        verdict = health.parse(reply)
        self._noted(job, verdict)
        self._hold(job, verdict.tokens)
        return verdict.tokens

    def give_back(self, pipe: Any, job: CompiledJob, tokens: list[str],
                  sent: Sent | None = None) -> None:
        """Queue the release of permits ``send_all`` left to the caller, with the report of
        what ``sent`` holds that Redis was not told yet (when it says anything new)."""
        self._forget(tokens)
        report = self._report(job, sent)
        if report is None:
            self.permits.queue_release(pipe, job.id, tokens)
        else:
            self.permits.queue_trade(pipe, job, tokens, 0, LEASE_SECONDS, report)

    def _report(self, job: CompiledJob, sent: Sent | None) -> Report | None:
        """The report to send, or None: nothing new, or all good for a job at full health
        (the fast path: a healthy job's tasks report nothing and cost nothing more)."""
        if sent is None:
            return None
        report = sent.report()
        if report.empty or (report.failed == 0 and self._healthy.get(job.id, False)):
            return None
        return report

    def abandon(self, tokens: list[str]) -> None:
        """A run failed: stop renewing its permits, which expire with their lease."""
        self._forget(tokens)

    def send_all(self, job: CompiledJob, items: list[Pending],
                 send: Callable[[Pending], Outcome], stop_at: float,
                 held: list[str],
                 progress: Callable[[Sent], None] | None = None) -> tuple[Sent, list[str]]:
        """Every item with its outcome, and the permits left to give back (``give_back``,
        with the task's outcomes); ``held`` are permits the task already took. ``progress``
        is told the outcomes so far, from the calling thread, while lanes send.

        What could not start before ``stop_at`` (monotonic) is deferred (a retry that counts
        no attempt); what could not start because the endpoint asked for a pause, or its
        breaker is open, waits that long. A lone request with a permit in hand is sent in this
        thread.
        """
        queue = _chains(items)
        if held and len(queue) == 1 and len(queue[0]) == 1:
            return Sent([_send_here(queue[0][0], send, stop_at)]), held
        control, sent = _Control(job.adaptive, progress), Sent()
        width = _width(job)
        lanes: dict[Future[None], str] = {}  # lane -> its permit
        for token in held[:min(len(queue), width)]:
            lanes[self.pool.submit(self._lane, queue, sent, send, control)] = token
        spare = held[len(lanes):]
        try:
            spare = self._run(job, queue, sent, send, control, lanes, spare, stop_at)
        except SoftTimeLimitExceeded:
            control.stop.set()  # requests in flight finish (bounded by the job's timeout)
        finally:
            self._drain(job, lanes, control, sent)
        later = (Outcome.waiting if control.wait else lambda i, _: Outcome.deferred(i))
        sent += [(item, later(item.index, control.wait)) for chain in queue for item in chain]
        return sent, spare

    def _run(self, job: CompiledJob, queue: deque[list[Pending]], sent: Sent,
             send: Callable[[Pending], Outcome], control: _Control,
             lanes: dict[Future[None], str], spare: list[str], stop_at: float) -> list[str]:
        """The task thread's loop: permits for lanes while records wait, health told and
        heeded, until the records are taken, the time is up, or the endpoint says wait.
        Returns the permits held but never used (``spare``, when no record waited)."""
        pause, asked = PERMIT_POLL_SECONDS[0], time.monotonic()
        while queue and not control.stop.is_set():
            if control.progress is not None:
                control.progress(sent)
            done, spare = _finished(lanes) + spare, []
            wanted = min(len(queue), _width(job)) - len(lanes)
            if done or wanted > 0 or time.monotonic() - asked >= HEALTH_CHECK_SECONDS:
                verdict, asked = self._trade_permits(job, done, wanted, sent), time.monotonic()
                for token in verdict.tokens:
                    lanes[self.pool.submit(self._lane, queue, sent, send, control)] = token
                control.shed(verdict.shed(len(lanes)))
                if verdict.wait:
                    control.pause(verdict.wait)
            if time.monotonic() >= stop_at:
                control.stop.set()
            elif lanes:
                wait(lanes, timeout=PERMIT_POLL_SECONDS[1] if control.progress is None
                     else PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
            elif not control.stop.is_set():  # the job is at its limit elsewhere: ask again soon
                time.sleep(pause)
                pause = min(pause * 2, PERMIT_POLL_SECONDS[1])
        return spare

    def _trade_permits(self, job: CompiledJob, release: list[str], wanted: int,
                  sent: Sent | None = None) -> Verdict:
        """Give back the permits of finished lanes, tell what requests met, and take more,
        in one round trip."""
        self._forget(release)
        try:
            verdict = self.permits.trade(job, release, wanted, LEASE_SECONDS,
                                            self._report(job, sent))
        except redis.RedisError as e:  # what was given back expires by itself
            log.warning("job %s: cannot take request permits (%s); waiting", job.id, e)
            return Verdict()
        self._noted(job, verdict)
        self._hold(job, verdict.tokens)
        return verdict

    def _noted(self, job: CompiledJob, verdict: Verdict) -> None:
        """Remember whether the job is at full health; log the breaker's changes."""
        self._healthy[job.id] = verdict.healthy
        if verdict.moved:
            before, _, after = verdict.moved.partition(">")
            level = logging.WARNING if after != "closed" else logging.INFO
            log.log(level, "job %s: endpoint circuit breaker %s -> %s", job.id, before, after,
                    extra={"job": job.id})

    def _hold(self, job: CompiledJob, tokens: list[str]) -> None:
        self.leases.hold(dict.fromkeys(tokens, job.id))

    def _forget(self, tokens: list[str]) -> None:
        self.leases.release(tokens)

    def _drain(self, job: CompiledJob, lanes: dict[Future[None], str],
               control: _Control, sent: Sent) -> None:
        """Wait for every lane, even when the soft time limit strikes meanwhile, giving back
        the permits of finished lanes every DRAIN_RELEASE_SECONDS: lanes that ran dry
        together go back in one call, and no permit idles longer than that."""
        while lanes:
            try:
                wait(lanes, timeout=DRAIN_RELEASE_SECONDS)
                if done := _finished(lanes):
                    self._trade_permits(job, done, 0, sent)
                if control.progress is not None and lanes:
                    control.progress(sent)
            except SoftTimeLimitExceeded:  # permits not given back expire with their lease
                control.stop.set()

    def _renew_all(self, held: dict[str, str]) -> None:
        by_job: dict[str, list[str]] = {}
        for token, job_id in held.items():
            by_job.setdefault(job_id, []).append(token)
        for job_id, tokens in by_job.items():
            try:
                self.permits.renew(job_id, tokens, LEASE_SECONDS)
            except redis.RedisError as e:
                log.warning("job %s: cannot renew request permits (%s)", job_id, e)

    @staticmethod
    def _lane(queue: deque[list[Pending]], sent: Sent, send: Callable[[Pending], Outcome],
              control: _Control) -> None:
        while not control.stop.is_set() and not control.ends_a_lane():
            try:
                chain = queue.popleft()
            except IndexError:
                return
            outcomes = _send_chain(chain, send, control.stop)
            sent.extend(outcomes)
            verdicts = [health.judge(outcome) for _, outcome in outcomes]
            for _, outcome in outcomes:  # a pause asked for holds this task's lanes at once
                if health.asks_pause(outcome):
                    control.pause(outcome.retry_after or 0.0)
            if control.adaptive and "overload" in verdicts:
                return  # the endpoint is full: this lane's permit goes back with the report


def _finished(lanes: dict[Future[None], str]) -> list[str]:
    """Take the lanes that ended out of ``lanes``; their permits."""
    done = [lane for lane in lanes if lane.done()]
    return [lanes.pop(lane) for lane in done]


def _width(job: CompiledJob) -> int:
    """The most lanes one task runs. A rate-limited job sends one request at a time per
    task, as before lanes: its spacing is kept by sleeping, which parallel lanes would blur."""
    return 1 if job.ratelimit else job.concurrency


def _send_here(item: Pending, send: Callable[[Pending], Outcome],
               stop_at: float) -> tuple[Pending, Outcome]:
    """Send in the task's own thread, where the soft time limit can strike: then the
    record is deferred (it may have gone: a duplicate its Idempotency-Key absorbs)."""
    if time.monotonic() >= stop_at:
        return item, Outcome.deferred(item.index)
    try:
        return item, send(item)
    except SoftTimeLimitExceeded:
        return item, Outcome.deferred(item.index)


def _chains(items: list[Pending]) -> deque[list[Pending]]:
    """What lanes take: each record alone, except that the records of one entity
    (``ordering_key``) in one message form a chain, sent one after another in index order."""
    chains: deque[list[Pending]] = deque()
    by_entity: dict[tuple[int, bytes], list[Pending]] = {}
    for item in items:
        if item.entity is None:
            chains.append([item])
        elif (chain := by_entity.get((item.position, item.entity))) is not None:
            chain.append(item)
        else:
            by_entity[(item.position, item.entity)] = chain = [item]
            chains.append(chain)
    return chains


def _send_chain(chain: list[Pending], send: Callable[[Pending], Outcome],
                stop: threading.Event) -> Outcomes:
    """A record that must be retried keeps the rest of its chain behind it."""
    sent: Outcomes = []
    for n, item in enumerate(chain):
        if stop.is_set():
            return sent + [(later, Outcome.deferred(later.index)) for later in chain[n:]]
        outcome = send(item)
        sent.append((item, outcome))
        if not outcome.final:
            return sent + [(later, Outcome.behind(later.index)) for later in chain[n + 1:]]
    return sent
