"""Every Redis key and pub/sub channel name, in one place."""

from __future__ import annotations

JOB_IDS = "list_jobs"
"""Set of every stored job id."""

SENTINEL = "rest_consumer:sentinel"
"""Set once by any process; its absence means Redis lost its data (flush or failover)."""

JOBS_LOADED = "rest_consumer:jobs_loaded"
"""Set once Redis holds every job of the jobs topic; its absence means the copy must be rebuilt."""

HASH_KEY = "rest_consumer:hash_key"
"""Random key for the HMAC that stands in for secrets when a job's hash is computed."""

CONTROL_PATTERN = "msg/job:*"

KOMBU_UNACKED = "unacked"
"""kombu's Redis transport keeps the tasks workers hold (running, or in a worker's prefetch
buffer) in this hash."""
KOMBU_UNACKED_INDEX = "unacked_index"
"""kombu's sorted set of the same tasks, scored by when they were reserved."""

WORKERS = "rest_consumer:workers"
"""Set of the worker incarnations that file the tasks they hold (``broker.holders``)."""

RETRIES = "rest_consumer:retries"
"""Sorted set of retries waiting for their time, scored by when they are due (Unix time)."""

RETRY_PUMP = "rest_consumer:retry_pump"
"""Lease of the one reader process moving due retries onto the Celery queue."""


def task_claim(task_id: str) -> str:
    """A ``deliver`` task's claim: a running lease, then a done mark (``claims``)."""
    return f"claim:{task_id}"


def worker_held(incarnation: str) -> str:
    """Set of the delivery tags one worker incarnation holds (``broker.holders``)."""
    return f"worker:{incarnation}:held"


def worker_alive(incarnation: str) -> str:
    """A worker incarnation's alive mark, renewed while it lives (``dead_workers``)."""
    return f"worker:{incarnation}:alive"


def job(job_id: str) -> str:
    """The stored job document (JSON)."""
    return f"job:{job_id}"


def owner_jobs(owner: str) -> str:
    """Set of the ids of one owner's jobs."""
    return f"jobs_by_owner:{owner}"


def control_channel(job_id: str) -> str:
    """Pub/sub channel carrying control messages for one job."""
    return f"msg/job:{job_id}"


def job_id_from_channel(channel: str) -> str:
    """Inverse of :func:`control_channel`."""
    return channel.split(":", 1)[1]


def counters(job_id: str) -> str:
    """Hash of the job's counters (dispatched, delivered, retried, dead_lettered, skipped)."""
    return f"counters:{job_id}"


def done(job_id: str, topic: str, partition: int) -> str:
    """Sorted set (score = offset) of one partition's offsets that reached a final outcome and
    are not committed yet: the reader reads it every tick and trims it below each commit, so
    a partition's next owner still finds what its previous owner had not committed."""
    return f"done:{job_id}:{partition}:{topic}"


def fresh(job_id: str, topic: str, partition: int) -> str:
    """List of one partition's offsets made final since its reader last looked: workers push
    them with their ``done`` marks, the reader pops them every few tens of milliseconds, a
    read that costs what is new instead of everything final above the watermark. Only a
    shortcut: ``done`` stays the truth."""
    return f"fresh:{job_id}:{partition}:{topic}"


def out(job_id: str, topic: str, partition: int) -> str:
    """Sorted set (score = offset) of one partition's offsets dispatched and not committed
    yet: with ``done``, what the partition's next owner adopts (out, not final) instead of
    dispatching it again, and what it knows final."""
    return f"out:{job_id}:{partition}:{topic}"


def committed(job_id: str) -> str:
    """Hash: ``<partition>:<topic>`` -> the offset the partition's reader last committed.
    Everything below it is final: a task copy that runs after its original was committed (a
    re-dispatch after Redis lost what was out, a redelivery) sends nothing, although ``done``
    no longer lists those offsets. Cleared when a reader is assigned the partition or
    ``set_offset`` moves it, so it never claims more than the reader's own commit says."""
    return f"committed:{job_id}"


def committed_field(topic: str, partition: int) -> str:
    return f"{partition}:{topic}"


def lettered(job_id: str, topic: str, partition: int) -> str:
    """Sorted set (score = offset) of one partition's offsets an ordered job dead-lettered and
    has not committed yet (``heldbehind``); trimmed with ``done``."""
    return f"lettered:{job_id}:{partition}:{topic}"


def held_behind(job_id: str) -> str:
    """Hash: ``topic[partition]@offset`` of a dead-lettered message -> JSON of the offsets
    that waited behind it (``heldbehind``)."""
    return f"held_behind:{job_id}"


def dead_letter_index(job_id: str) -> str:
    """Sorted set of the offsets of the job's live dead letters in its dead-letter topic."""
    return f"dlq_index:{job_id}"


def dead_letter_scanned(job_id: str) -> str:
    """Where the index was last rebuilt from the topic; its absence means rebuild it."""
    return f"dlq_scanned:{job_id}"


def last_error(job_id: str) -> str:
    """JSON of the job's most recent failure."""
    return f"last_error:{job_id}"


def reader_heartbeat(job_id: str) -> str:
    """Hash: reader instance -> JSON of its state for this job, refreshed while it runs."""
    return f"reader:{job_id}"


def permits(job_id: str) -> str:
    """Sorted set of the job's request permits in use, scored by lease expiry (ms)."""
    return f"permits:{job_id}"


def endpoint_health(job_id: str) -> str:
    """Hash: the job's endpoint health (adaptive limit, breaker state, pause; ``health``)."""
    return f"endpoint_health:{job_id}"


def endpoint_history(job_id: str) -> str:
    """List of JSON ``[unix time, limit, state]``, one per change, the newest 120."""
    return f"endpoint_history:{job_id}"


def seek_request(job_id: str) -> str:
    """JSON of the job's newest ``set_offset`` request (``seeks``)."""
    return f"seek_request:{job_id}"


def seek_generation(job_id: str) -> str:
    """Counter numbering the job's ``set_offset`` requests."""
    return f"seek_generation:{job_id}"


def seek_applied(job_id: str) -> str:
    """Hash: partition (``topic[n]``) -> generation of the last request applied to it."""
    return f"seek_applied:{job_id}"


def job_keys(job_id: str) -> list[str]:
    """The per-job tracking keys removed with the job (``done`` lists are found by pattern)."""
    return [counters(job_id), last_error(job_id), reader_heartbeat(job_id),
            latency(job_id), ratelimit(job_id), oauth2_token(job_id),
            dead_letter_index(job_id), dead_letter_scanned(job_id), held_behind(job_id),
            permits(job_id), seek_request(job_id), seek_generation(job_id),
            seek_applied(job_id), endpoint_health(job_id), endpoint_history(job_id),
            committed(job_id)]


def throughput(job_id: str, window: int) -> str:
    """Hash: ``<bucket>:<kind>`` -> count, for one 15-minute window (``throughput``)."""
    return f"throughput:{job_id}:{window}"


def pattern_keys(job_id: str) -> list[str]:
    """SCAN patterns for a job's keys with a variable part (``done``, ``fresh``, ``out``,
    ``lettered``, ``throughput``), removed with the job."""
    return [f"done:{job_id}:*", f"fresh:{job_id}:*", f"out:{job_id}:*", f"lettered:{job_id}:*",
            f"throughput:{job_id}:*"]


def ratelimit(job_id: str) -> str:
    """The job's theoretical arrival time of its next request (GCRA), on Redis's clock."""
    return f"ratelimit:{job_id}"


def oauth2_token(job_id: str) -> str:
    """The job's cached OAuth2 access token (JSON with the job hash it was fetched for)."""
    return f"oauth2:{job_id}"


def oauth2_lock(job_id: str) -> str:
    """Held by the one worker fetching a job's token, so the others wait for it."""
    return f"oauth2_lock:{job_id}"


def latency(job_id: str) -> str:
    """Hash of the job's request-duration histogram: bucket index -> count, and ``sum``."""
    return f"latency:{job_id}"
