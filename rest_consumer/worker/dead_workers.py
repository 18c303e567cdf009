"""A dead worker's tasks back in their queues within seconds, not after the visibility timeout.

Each worker files the tasks it holds under its incarnation (``broker.holders``) and, from one
daemon thread of its main process, renews an alive mark every ``WATCH_SECONDS`` and looks
for incarnations whose mark has lapsed. The first worker to see one takes its file (``SREM``
from the set of workers answers 1 to one of them only) and puts its tasks back through
kombu's own restore, the WATCHed transaction kombu's sweep uses, then forgets it.

Measured before this, with ``faults/run``'s ``worker_sigkill`` (shipped settings): every
SIGKILLed worker's tasks waited for kombu's sweep, 45 to 46 s (the visibility timeout).

Why it cannot run a task twice: the mark lapses ``ALIVE_SECONDS`` after its last renewal,
later than any claim lease (``claims``) a dead worker's runs held can last, so a task still
claimed as running is being run by a living process: it is left where it is, to kombu's sweep.
A copy put back while another copy waits in a living worker's buffer finds the first run's
claim and does nothing, as any redelivered copy does.

A worker whose broker connection broke (Redis restarted, failed over) is in the same place
for the tasks it had reserved: Celery drops its prefetch buffer when it reconnects, and those
tasks waited for the visibility timeout too (the 0 to 49 s recoveries of ``faults/run``'s
Redis restart). So, as it reconnects, a worker puts back what its own file holds but a run
holds by its claim (``take_back_own``).

Redis away for longer than ``ALIVE_SECONDS`` lets every mark lapse, and the claims of runs
still going with them; so a worker looks for the dead only once its own beats have gone
through for ``ALIVE_SECONDS`` without a break (by then every living worker has renewed its
mark), and on reconnecting keeps what its pool is running (Celery's active requests) as well
as what is claimed. Tasks of a worker that dies within ``ALIVE_SECONDS`` of Redis losing its
data went with the data, and come back after the visibility timeout, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from celery import Celery, bootsteps
from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state
from kombu.exceptions import KombuError

from rest_consumer.broker import holders
from rest_consumer.core.config import Settings
from rest_consumer.state import keys
from rest_consumer.worker.claims import LEASE_SECONDS, RENEW_EVERY_SECONDS, TaskClaims

log = logging.getLogger(__name__)

WATCH_SECONDS = 2.0
"""How often a worker renews its mark and looks for dead ones."""
ALIVE_SECONDS = int(LEASE_SECONDS + RENEW_EVERY_SECONDS + WATCH_SECONDS)
"""How long a mark outlives its last renewal: a claim renewed just before its worker died
lapses first."""

Restore = Callable[[list[str]], None]
"""Puts these tags' messages back in their queues (kombu's ``restore_by_tag``)."""
Running = Callable[[redis.Redis, list[str]], set[str]]
"""Which of these task ids a run holds now (``TaskClaims.running``)."""


class DeadWorkers:
    """One worker's alive mark, and its look for the dead."""

    def __init__(self, client: redis.Redis, incarnation: str, restore: Restore,
                 running: Running, settle_seconds: float = ALIVE_SECONDS) -> None:
        self.redis = client
        self.incarnation = incarnation
        self.restore = restore
        self.running = running
        self.settle_seconds = settle_seconds
        """How long this worker's beats must go through before it judges another dead."""
        self._beating_since: float | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dead-workers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """A worker that stops: its mark and file go (kombu put back what it held)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(WATCH_SECONDS + 5)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.srem(keys.WORKERS, self.incarnation)
            pipe.delete(keys.worker_alive(self.incarnation), keys.worker_held(self.incarnation))
            pipe.execute()
        except redis.RedisError as e:  # its mark lapses; a peer finds an empty file
            log.warning("worker %s: cannot remove its alive mark (%s)", self.incarnation, e)

    def beat(self) -> None:
        """Renew this worker's mark; take back what dead workers held."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(keys.worker_alive(self.incarnation), 1, ex=ALIVE_SECONDS)
            pipe.sadd(keys.WORKERS, self.incarnation)
            pipe.smembers(keys.WORKERS)
            workers = pipe.execute()[-1]
        except redis.RedisError:
            self._beating_since = None
            raise
        now = time.monotonic()
        if self._beating_since is None:
            self._beating_since = now
        if now - self._beating_since >= self.settle_seconds:
            for dead in self._dead([w for w in _names(workers) if w != self.incarnation]):
                self._take_back(dead)

    def take_back_own(self, active: set[str]) -> None:
        """As this worker reconnects to its broker: the tasks Celery dropped from its buffer
        (filed, not among its pool's ``active`` tags, not claimed by a run) go back to their
        queues (a restore takes each tag out of this worker's file)."""
        back, _ = self._put_back(keys.worker_held(self.incarnation), active)
        if back:
            log.warning("worker %s reconnected to its broker: %d task(s) dropped from its "
                        "buffer put back in their queues", self.incarnation, len(back))

    def _put_back(self, held: str, keep: set[str]) -> tuple[list[str], set[str]]:
        """Restore the tags filed in ``held`` but those in ``keep`` and those a run claims;
        returns (restored, claimed)."""
        tags = sorted(_names(self.redis.smembers(held)))
        claimed = self.running(self.redis, tags)
        back = [t for t in tags if t not in claimed and t not in keep]
        self.restore(back)
        return back, claimed

    def _dead(self, others: list[str]) -> list[str]:
        """Those of ``others`` whose alive mark has lapsed."""
        if not others:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for other in others:
            pipe.exists(keys.worker_alive(other))
        return [other for other, alive in zip(others, pipe.execute(), strict=True)
                if not alive]

    def _take_back(self, dead: str) -> None:
        if not self.redis.srem(keys.WORKERS, dead):
            return  # another worker took it
        held = keys.worker_held(dead)
        try:
            back, claimed = self._put_back(held, set())
        except BaseException:
            self.redis.sadd(keys.WORKERS, dead)  # for the next look (a restore is idempotent)
            raise
        self.redis.delete(held)
        if back or claimed:
            log.warning("worker %s stopped renewing its alive mark (%d s): %d task(s) it held "
                        "put back in their queues%s", dead, ALIVE_SECONDS, len(back),
                        f"; {len(claimed)} still run elsewhere, left to the visibility "
                        "timeout" if claimed else "")

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except (redis.RedisError, OSError, KombuError) as e:  # the next beat tries again
                log.warning("worker %s: cannot renew its alive mark or put back a dead "
                            "worker's tasks (%s)", self.incarnation, e)
            if self._stopped.wait(WATCH_SECONDS):
                return


_watching: list[DeadWorkers] = []
"""This worker's watch, from ``worker_ready`` to ``worker_shutdown`` (main process)."""


def install(app: Celery, settings: Settings) -> None:
    """Wire the watch into a worker of ``app``: filing only where a task acknowledges itself
    (the fast path, with the broker on ``REDIS_URL``'s Redis); elsewhere nothing changes."""
    if not settings.tasks_settle_themselves():
        return

    def begin(sender: Any, **_: Any) -> None:
        # the main process, before its pool forks: the pool's processes share the name
        holders.begin(str(getattr(sender, "hostname", "worker")))

    def watch(**_: Any) -> None:
        incarnation = holders.incarnation()
        if incarnation is not None:
            _watching.append(DeadWorkers(settings.redis_client(socket_timeout=10), incarnation,
                                         partial(_restore, app), TaskClaims.running))
            _watching[-1].start()

    def stop(**_: Any) -> None:
        while _watching:
            _watching.pop().stop()
        holders.end()

    worker_init.connect(begin, weak=False)
    worker_ready.connect(watch, weak=False)
    worker_shutdown.connect(stop, weak=False)
    app.steps["consumer"].add(TakeBackOnReconnect)


class TakeBackOnReconnect(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: Celery starts it each time the worker (re)connects to its broker,
    after its queues are consumed again and before its event loop reads a message."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.starts = 0

    def start(self, consumer: Any) -> None:
        self.starts += 1
        if self.starts > 1 and _watching:
            active = {r.message.delivery_tag for r in list(worker_state.active_requests)}
            try:
                _watching[0].take_back_own(active)
            except (redis.RedisError, OSError, KombuError) as e:  # they wait, as before
                log.warning("cannot put back the tasks dropped on reconnecting (%s)", e)


def _restore(app: Celery, tags: list[str]) -> None:
    """Kombu's own restore of each tag's message to its queue (a WATCHed transaction)."""
    if not tags:
        return
    with app.connection_for_write() as conn:
        qos = conn.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag)


def _names(members: Any) -> list[str]:
    """A set's members (bytes) as text."""
    return [bytes(m).decode() for m in members]
