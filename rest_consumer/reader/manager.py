"""The reader process: owns one JobReader per enabled job and keeps them in line with the
store, through control messages (fast path) and periodic reconciliation (healing)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from confluent_kafka import KafkaException

from rest_consumer.core.config import Settings
from rest_consumer.core.jobs import Job, setting
from rest_consumer.core.messages import Dispatcher
from rest_consumer.reader.job_reader import JobReader
from rest_consumer.state import keys
from rest_consumer.state.control import Command, ControlListener
from rest_consumer.state.jobfiles import load_job_files
from rest_consumer.state.retries import Publisher, RetryPump
from rest_consumer.state.store import JobStore
from rest_consumer.state.topics import TopicError

log = logging.getLogger(__name__)

STOP_BUDGET_SECONDS = 30.0
SENTINEL_CHECK_SECONDS = 1.0


class ReaderManager:
    """Starts, restarts and stops job readers; heals after Redis loses its data."""

    def __init__(self, settings: Settings, client: redis.Redis, dispatch: Dispatcher,
                 publish_retries: Publisher) -> None:
        self.settings = settings
        self.publish_retries = publish_retries
        self.redis = client
        self.store = JobStore.for_settings(client, settings)
        self.dispatch = dispatch
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.readers: dict[str, JobReader] = {}
        self._lock = threading.RLock()
        self._files_loaded = False
        self._redis_run_id: str | None = None

    # --- the desired state ---------------------------------------------------------------

    def reconcile(self) -> None:
        """Converge on the store: run every enabled job at its stored version, nothing else."""
        with self._lock:
            if self._recover_if_redis_lost():
                return
            self._load_jobs()
            wanted = {job["id"]: job for job in self.store.list() if setting(job, "enabled")}
            for job_id in set(self.readers) - set(wanted):
                self._stop(job_id)
            for job in wanted.values():
                self._run(job)
                self.readers[job["id"]].check_seek_request()

    def handle(self, command: Command) -> None:
        """A control message: look at the stored job and act on it."""
        log.info("control: %s %s", command.action, command.job_id)
        with self._lock:
            if self._recover_if_redis_lost():
                return
            job = self.store.find(command.job_id)
            if job is None or not setting(job, "enabled"):
                self._stop(command.job_id, forget=job is None)
                return
            self._run(job)
            if command.action == "set_offset":
                self.readers[job["id"]].check_seek_request()

    def _run(self, job: Job) -> None:
        current = self.readers.get(job["id"])
        if current is not None and current.is_alive() and current.job.get("hash") == job["hash"]:
            return
        if current is not None:
            self._stop(job["id"])
        reader = JobReader(job, self.settings, self.redis, self.dispatch, self.instance)
        self.readers[job["id"]] = reader
        reader.start()
        log.info("job %s: reader started (hash %s)", job["id"], job["hash"][:12])

    def _stop(self, job_id: str, forget: bool = False) -> None:
        reader = self.readers.pop(job_id, None)
        if reader is not None:
            reader.stop()
            reader.join(STOP_BUDGET_SECONDS)
        if forget:  # the job was deleted: its keys with a variable part go with it
            for pattern in keys.pattern_keys(job_id):
                for key in self.redis.scan_iter(match=pattern, count=1000):
                    self.redis.delete(key)

    # --- healing -------------------------------------------------------------------------

    def mark_redis(self) -> None:
        """Set the sentinel whose disappearance tells us Redis lost its data."""
        self.redis.set(keys.SENTINEL, self.instance, nx=True)

    def _rewind_if_redis_restarted(self) -> None:
        """A Redis that restarted (its ``run_id`` changed) kept its data but may have lost
        its last second (AOF ``everysec``): a task sent then, or an outcome, may be gone.
        Readers re-dispatch what Redis no longer lists as out or final (``seeking``); what it
        still lists is in its queues, or in a worker that records it once Redis is back."""
        run_id = str(self.redis.info("server").get("run_id", ""))
        previous, self._redis_run_id = self._redis_run_id, run_id
        if previous is None or previous == run_id:
            return
        log.warning("Redis restarted (run_id changed); %d reader(s) re-dispatch what it may "
                    "have lost", len(self.readers))
        for reader in self.readers.values():
            reader.request_rewind(data_kept=True)

    def _load_jobs(self) -> None:
        """The jobs topic first (after Redis lost its data), then the job files (they never
        override a stored job); retried at each reconcile until it works (Kafka down)."""
        self.store.ensure_loaded()
        if not self._files_loaded:
            load_job_files(self.store, self.settings.jobs_dir)
            self._files_loaded = True

    def _recover_if_redis_lost(self) -> bool:
        if self.redis.exists(keys.SENTINEL):
            self._rewind_if_redis_restarted()
            return False
        restored = self.store.ensure_loaded()
        log.warning("Redis lost its data: %d job(s) restored from the jobs topic; %d reader(s) "
                    "re-dispatch what they do not know final", restored, len(self.readers))
        for reader in self.readers.values():
            reader.request_rewind()
        self.mark_redis()
        self._redis_run_id = str(self.redis.info("server").get("run_id", ""))
        return True

    # --- lifecycle -----------------------------------------------------------------------

    def serve(self, stopping: threading.Event) -> None:
        """Run until ``stopping`` is set: load job files, follow control, reconcile."""
        self.mark_redis()
        self._guard(self._load_jobs)
        listener = ControlListener(self.redis, self._handle_safely, self._reconcile_safely)
        listener.start()
        pump = RetryPump(self.redis, self.publish_retries, self.instance)
        pump.start()
        self._reconcile_safely()
        last_reconcile = time.monotonic()
        while not stopping.wait(SENTINEL_CHECK_SECONDS):
            if time.monotonic() - last_reconcile >= self.settings.reconcile_interval:
                self._reconcile_safely()
                last_reconcile = time.monotonic()
            else:
                self._guard(self._check_redis)
        listener.stop()
        pump.stop()
        self.stop_all()

    def _check_redis(self) -> None:
        with self._lock:
            self._recover_if_redis_lost()

    def _handle_safely(self, command: Command) -> None:
        self._guard(self.handle, command)

    def _reconcile_safely(self) -> None:
        self._guard(self.reconcile)

    @staticmethod
    def _guard(action: Any, *args: Any) -> None:
        try:
            action(*args)
        except redis.RedisError as e:
            log.warning("Redis unavailable (%s); will try again", e)
        except (TopicError, KafkaException) as e:
            log.warning("Kafka unavailable (%s); will try again", e)
        except Exception:
            log.exception("unexpected error in the reader manager")

    def stop_all(self) -> None:
        """Stop every reader (each commits what is final), within one time budget."""
        with self._lock:
            readers = list(self.readers.values())
            self.readers.clear()
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + STOP_BUDGET_SECONDS
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                log.error("job %s: reader did not stop in time", reader.job_id)
