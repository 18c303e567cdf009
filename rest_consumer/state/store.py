"""JobStore: jobs in Redis (``job:<id>``, the ``list_jobs`` index, a per-owner index), each
change written first to the jobs topic in Kafka (``joblog``), from which Redis is rebuilt."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis

from rest_consumer.core import jobs
from rest_consumer.core.config import DEFAULT_CONSUMER_GROUP_PREFIX, Settings
from rest_consumer.core.destinations import Allowlist
from rest_consumer.core.errors import JobNotFound, JobValidationError
from rest_consumer.core.jobs import Job
from rest_consumer.state import keys
from rest_consumer.state.control import Command, publish
from rest_consumer.state.joblog import JobLog
from rest_consumer.state.replies import as_text

T = TypeVar("T")
log = logging.getLogger(__name__)


class JobStore:
    """Stores validated jobs; every change publishes its control message in the same transaction.

    With a ``JobLog``, Kafka holds every change before Redis does (so a refused Kafka write
    changes nothing), and ``ensure_loaded`` rebuilds Redis's copy after it lost its data.
    Without one (unit tests, preview tools) Redis is the only copy.
    """

    def __init__(self, client: redis.Redis, allowlist: Allowlist | None = None,
                 log: JobLog | None = None,
                 own_prefix: str = DEFAULT_CONSUMER_GROUP_PREFIX) -> None:
        self.redis = client
        self.allowlist = allowlist or Allowlist()
        self.log = log
        self.own_prefix = own_prefix
        """``CONSUMER_GROUP_PREFIX``: the project's own topics, which no job may read."""
        self._hash_key: bytes | None = None

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> JobStore:
        """The store every service uses: Redis's copy backed by the jobs topic."""
        joblog = JobLog(settings.kafka_client_config(), settings.consumer_group_prefix)
        return cls(client, settings.destination_allowlist, joblog,
                   settings.consumer_group_prefix)

    def ensure_loaded(self) -> int:
        """Rebuild Redis's copy from the jobs topic if Redis lost it; returns jobs restored.

        Cheap when nothing was lost (one EXISTS). Jobs only Redis knows (stored before the
        topic existed) are written to the topic, so the two agree from then on.
        """
        if self.log is None or self.redis.exists(keys.JOBS_LOADED):
            return 0
        logged = self.log.read()
        restored = sum(self.restore(job) for job in logged.values())
        for job in self.list():
            if job["id"] not in logged:
                self.log.put(job)
        self.redis.set(keys.JOBS_LOADED, "1")
        return restored

    def find(self, job_id: str) -> Job | None:
        raw = self.redis.get(keys.job(job_id))
        return json.loads(raw) if raw else None

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, owner: str | None = None) -> list[Job]:
        """Every job, or one owner's, ordered by id."""
        index = keys.owner_jobs(owner) if owner is not None else keys.JOB_IDS
        ids = sorted(as_text(i) for i in self.redis.smembers(index))
        if not ids:
            return []
        raws = self.redis.mget([keys.job(i) for i in ids])
        return [json.loads(raw) for raw in raws if raw]

    def upsert(self, job_id: str, doc: Any, by: str | None = None) -> tuple[Job, bool]:
        """Validate and store; returns the stored job and whether it was created. ``by``:
        who saves it (``modified_by``)."""
        digest = self.secret_digest

        def change(pipe: Any) -> tuple[Job, bool]:
            raw = pipe.get(keys.job(job_id))
            stored = json.loads(raw) if raw else None
            job = jobs.prepare(doc, job_id, stored, digest, self.allowlist, self.own_prefix)
            if by is not None:
                job["modified_by"] = by
            self._log(job)
            pipe.multi()
            self._write(pipe, job, stored)
            publish(pipe, Command(job_id, "upsert", job["hash"]))
            return job, stored is None

        return self._transaction(change, keys.job(job_id))

    def create_if_absent(self, job_id: str, doc: Any) -> Job | None:
        """Store a job only when none has its id (config files never override); None if one did."""
        digest = self.secret_digest

        def change(pipe: Any) -> Job | None:
            if pipe.exists(keys.job(job_id)):
                return None
            job = jobs.prepare(doc, job_id, None, digest, self.allowlist, self.own_prefix)
            self._log(job)
            pipe.multi()
            self._write(pipe, job, None)
            publish(pipe, Command(job_id, "upsert", job["hash"]))
            return job

        return self._transaction(change, keys.job(job_id))

    def restore(self, job: Job) -> bool:
        """Put back a job that Redis lost (flush, failover) unless one was stored since.

        The topic is checked like the API: a job that fails validation (written straight into
        the topic, or valid under older rules) comes back stopped, with the reason, and never
        runs until it is saved again through the API.
        """
        checked = self._checked(job)
        if checked is None:
            return False
        job = checked

        def change(pipe: Any) -> bool:
            if pipe.exists(keys.job(job["id"])):
                return False
            pipe.multi()
            self._write(pipe, job, None)
            publish(pipe, Command(job["id"], "upsert", job["hash"]))
            return True

        return self._transaction(change, keys.job(job["id"]))

    def _checked(self, job: Job) -> Job | None:
        """The job as stored, or stopped with the reason when it fails validation; None when
        it cannot even be stored (no owner or hash to index it by)."""
        if not isinstance(job.get("owner"), str) or not isinstance(job.get("hash"), str):
            log.error("job %r from the jobs topic has no owner or hash; skipped", job.get("id"))
            return None
        problems = jobs.validate(jobs.document(job), self.allowlist, self.own_prefix)
        if not problems:
            return job
        reason = "invalid: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        log.error("job %s from the jobs topic is %s; restored stopped", job.get("id"), reason)
        return {**job, "enabled": False, "reason": reason}

    def set_enabled(self, job_id: str, enabled: bool, reason: str | None = None,
                    by: str | None = None) -> Job:
        """Start or stop a job: set ``enabled`` and tell the readers.

        Stopping is never refused: a job stored under older rules (say, a narrower allowlist
        since) can always be stopped. Starting validates it again, so a job restored stopped
        because it is invalid runs only once it is saved through the API.
        """
        def change(pipe: Any) -> Job:
            stored = self._get_watched(pipe, job_id)
            if enabled and (problems := jobs.validate(jobs.document(stored), self.allowlist,
                                                      self.own_prefix)):
                raise JobValidationError(problems)
            kept = {k: v for k, v in stored.items() if k not in jobs.VIEW_FIELDS}
            if reason:  # shown with the stopped state (``status.job_state``)
                kept["reason"] = reason
            job = jobs.stamp({**kept, "enabled": enabled}, self.secret_digest)
            if by is not None:
                job["modified_by"] = by
            self._log(job)
            pipe.multi()
            self._write(pipe, job, stored)
            publish(pipe, Command(job_id, "start" if enabled else "stop", job["hash"]))
            return job

        return self._transaction(change, keys.job(job_id))

    def delete(self, job_id: str) -> Job:
        """Remove a job, its indexes and its tracking keys; tell the readers."""
        def change(pipe: Any) -> Job:
            stored = self._get_watched(pipe, job_id)
            if self.log is not None:
                self.log.tombstone(job_id)
            pipe.multi()
            pipe.delete(keys.job(job_id), *keys.job_keys(job_id))
            pipe.srem(keys.JOB_IDS, job_id)
            pipe.srem(keys.owner_jobs(stored["owner"]), job_id)
            publish(pipe, Command(job_id, "delete", stored["hash"]))
            return stored

        return self._transaction(change, keys.job(job_id))

    def _log(self, job: Job) -> None:
        """Kafka first: if it refuses, the transaction ends here and Redis stays as it was.

        Under a WATCH conflict the change is computed and logged again, so the topic's newest
        record is always the version Redis ends with.
        """
        if self.log is not None:
            self.log.put(job)

    def _transaction(self, change: Callable[[Any], T], key: str) -> T:
        """Run ``change`` under WATCH ``key``, retried if the key changes meanwhile."""
        return cast(T, self.redis.transaction(cast(Any, change), key, value_from_callable=True))

    def secret_digest(self, value: str) -> str:
        """Keyed HMAC of a secret, used in place of the secret when hashing a job."""
        if self._hash_key is None:
            self.redis.set(keys.HASH_KEY, secrets.token_hex(32), nx=True)
            stored = self.redis.get(keys.HASH_KEY) or b""
            self._hash_key = stored if isinstance(stored, bytes) else str(stored).encode()
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _get_watched(pipe: Any, job_id: str) -> Job:
        raw = pipe.get(keys.job(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return dict(json.loads(raw))

    @staticmethod
    def _write(pipe: Any, job: Job, stored: Job | None) -> None:
        pipe.set(keys.job(job["id"]), json.dumps(job, sort_keys=True))
        pipe.sadd(keys.JOB_IDS, job["id"])
        if stored is not None and stored["owner"] != job["owner"]:
            pipe.srem(keys.owner_jobs(stored["owner"]), job["id"])
        pipe.sadd(keys.owner_jobs(job["owner"]), job["id"])

