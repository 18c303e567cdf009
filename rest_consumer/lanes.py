"""Lanes: a task's requests sent concurrently, within the job's permits.

The task's thread takes as many permits as it has requests (up to the job's ``concurrency``,
less what other tasks and workers hold), starts one lane per permit on the process's thread
pool, and keeps asking for more while requests wait. A lane sends requests one after another
until none is left; the task's thread gives the permits of finished lanes back in batches.
A slow endpoint therefore gets ``concurrency`` requests in flight whatever the Celery pool,
and adding workers never floods it.
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

from rest_consumer.mapping import CompiledJob
from rest_consumer.permits import LEASE_SECONDS, RENEW_EVERY_SECONDS, Permits, granted
from rest_consumer.records import Outcome, Pending

log = logging.getLogger(__name__)

PERMIT_POLL_SECONDS = (0.005, 0.05)
"""How soon to ask again for permits while the job is at its limit: first, and at most."""
DRAIN_RELEASE_SECONDS = 0.005
"""Once no request waits, how long finished lanes' permits may wait to go back together."""

Sent = list[tuple[Pending, Outcome]]


class Lanes:
    """Runs the sends of one task at a time per calling thread, on a shared thread pool."""

    def __init__(self, permits: Permits, pool: ThreadPoolExecutor) -> None:
        self.permits = permits
        self.pool = pool
        self._held: dict[str, str] = {}  # token -> job id, renewed while held
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def queue_first_permits(self, pipe: Any, job: CompiledJob, messages: int) -> None:
        """Queue, on the pipeline that claims a task, its first permits: one per message, up
        to the job's width (``took`` reads the reply). A task of one message then needs no
        round trip of its own for its permit."""
        self.permits.queue_exchange(pipe, job.id, job.concurrency, [],
                                    min(messages, _width(job)), LEASE_SECONDS)

    def took(self, job: CompiledJob, reply: Any) -> list[str]:
        """The permits of ``queue_first_permits``'s reply, now held (and renewed)."""
        tokens = granted(reply)
        self._hold(job, tokens)
        return tokens

    def give_back(self, pipe: Any, job: CompiledJob, tokens: list[str]) -> None:
        """Queue the release of permits ``send_all`` left to the caller."""
        self._forget(tokens)
        self.permits.queue_release(pipe, job.id, tokens)

    def abandon(self, tokens: list[str]) -> None:
        """A run failed: stop renewing its permits, which expire with their lease."""
        self._forget(tokens)

    def send_all(self, job: CompiledJob, items: list[Pending],
                 send: Callable[[Pending], Outcome], stop_at: float,
                 held: list[str]) -> tuple[Sent, list[str]]:
        """Every item with its outcome, and the permits left to give back (``give_back``,
        with the task's outcomes); ``held`` are permits the task already took.

        What could not start before ``stop_at`` (monotonic) is deferred (a retry that counts
        no attempt). A lone request with a permit in hand is sent in this thread.
        """
        queue = _chains(items)
        if held and len(queue) == 1 and len(queue[0]) == 1:
            return [_send_here(queue[0][0], send, stop_at)], held
        stop = threading.Event()
        sent: Sent = []
        width = _width(job)
        lanes: dict[Future[None], str] = {}  # lane -> its permit
        for token in held[:min(len(queue), width)]:
            lanes[self.pool.submit(self._lane, queue, sent, send, stop)] = token
        spare = held[len(lanes):]
        pause = PERMIT_POLL_SECONDS[0]
        try:
            while queue and not stop.is_set():
                done, spare = _finished(lanes) + spare, []
                more = self._exchange(job, done, min(len(queue), width) - len(lanes))
                for token in more:
                    lanes[self.pool.submit(self._lane, queue, sent, send, stop)] = token
                if time.monotonic() >= stop_at:
                    stop.set()
                elif lanes:
                    wait(lanes, timeout=PERMIT_POLL_SECONDS[1], return_when=FIRST_COMPLETED)
                else:  # the job is at its limit elsewhere: ask again soon
                    time.sleep(pause)
                    pause = min(pause * 2, PERMIT_POLL_SECONDS[1])
        except SoftTimeLimitExceeded:
            stop.set()  # requests in flight finish (bounded by the job's timeout)
        finally:
            self._drain(job, lanes, stop)
        sent += [(item, Outcome.deferred(item.index)) for chain in queue for item in chain]
        return sent, spare

    def _exchange(self, job: CompiledJob, release: list[str], wanted: int) -> list[str]:
        """Give back the permits of finished lanes and take more, in one round trip."""
        self._forget(release)
        try:
            tokens = self.permits.exchange(job.id, job.concurrency, release, wanted,
                                           LEASE_SECONDS)
        except redis.RedisError as e:  # what was given back expires by itself
            log.warning("job %s: cannot take request permits (%s); waiting", job.id, e)
            return []
        self._hold(job, tokens)
        return tokens

    def _hold(self, job: CompiledJob, tokens: list[str]) -> None:
        with self._held_lock:
            self._held.update((token, job.id) for token in tokens)
            if tokens and self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever,
                                                 name="permit-renewer", daemon=True)
                self._renewer.start()

    def _forget(self, tokens: list[str]) -> None:
        with self._held_lock:
            for token in tokens:
                self._held.pop(token, None)

    def _drain(self, job: CompiledJob, lanes: dict[Future[None], str],
               stop: threading.Event) -> None:
        """Wait for every lane, even when the soft time limit strikes meanwhile, giving back
        the permits of finished lanes every DRAIN_RELEASE_SECONDS: lanes that ran dry
        together go back in one call, and no permit idles longer than that."""
        while lanes:
            try:
                wait(lanes, timeout=DRAIN_RELEASE_SECONDS)
                if done := _finished(lanes):
                    self._exchange(job, done, 0)
            except SoftTimeLimitExceeded:  # permits not given back expire with their lease
                stop.set()

    def _renew_forever(self) -> None:
        """Keep the leases of the permits this process holds alive (a request may take longer
        than a lease; a dead process stops renewing, and its permits come back)."""
        while True:
            time.sleep(RENEW_EVERY_SECONDS)
            with self._held_lock:
                by_job: dict[str, list[str]] = {}
                for token, job_id in self._held.items():
                    by_job.setdefault(job_id, []).append(token)
            for job_id, tokens in by_job.items():
                try:
                    self.permits.renew(job_id, tokens, LEASE_SECONDS)
                except redis.RedisError as e:
                    log.warning("job %s: cannot renew request permits (%s)", job_id, e)

    @staticmethod
    def _lane(queue: deque[list[Pending]], sent: Sent, send: Callable[[Pending], Outcome],
              stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                chain = queue.popleft()
            except IndexError:
                return
            sent.extend(_send_chain(chain, send, stop))


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
                stop: threading.Event) -> Sent:
    """A record that must be retried keeps the rest of its chain behind it."""
    sent: Sent = []
    for n, item in enumerate(chain):
        if stop.is_set():
            return sent + [(later, Outcome.deferred(later.index)) for later in chain[n:]]
        outcome = send(item)
        sent.append((item, outcome))
        if not outcome.final:
            return sent + [(later, Outcome.behind(later.index)) for later in chain[n + 1:]]
    return sent
