"""Endpoint health: how many requests a job's endpoint takes at once, and whether it is up.

Held in Redis next to the job's permits and read by the same script that grants them, so a
task learns the job's limit, a ``Retry-After`` pause and the circuit breaker's state in the
round trip it already makes, and reports what its requests met in that same round trip:

- **Adaptive concurrency** (AIMD): the limit starts at ``concurrency`` and, while answers are
  good, grows by one every four round trips' worth of answers (``+good / (4 x limit)``). A
  ``429``, ``503``, timeout or connection error shrinks it at once to
  ``min(0.9 x limit, in flight - refused)``: the requests in flight when the endpoint refused
  some are the best measure of what it holds, so one report brings 32 down to the 8 an endpoint
  serves, where a fixed factor would need a dozen steps, each refusing more requests. The slow
  growth keeps refusals rare (one overshoot per some 30 answers at an 8-request endpoint)
  and the 0.9 factor keeps the limit near capacity, where halving (TCP's AIMD) would idle a
  quarter of it. Within ``[1, concurrency]``; a job opts out with ``adaptive: false``.
- **Retry-After**: a ``429``/``503`` that asks for a pause stops every new request of the job,
  on every worker, until then; the records wait in the retry schedule with no attempt counted.
- **Circuit breaker**: ``breaker_failures`` failed answers in a row (retryable statuses,
  timeouts, connection errors; any answer that is not one resets the count) open it: no request
  for a window (2 s, doubling on every failed probe, at most 15 s), then one probe
  (``half-open``); the probe's success closes it and the limit grows again from where it was.
  While it is open, records wait in the retry schedule for the window's end with no attempt
  counted (an outage does not use up ``max_retries``), and the reader's backpressure keeps the
  rest in Kafka.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from rest_consumer.core.errors import DeliveryError
from rest_consumer.core.records import Outcome
from rest_consumer.state import keys
from rest_consumer.state.replies import any_as_text, as_text

State = Literal["closed", "open", "half-open"]
OVERLOAD_STATUSES = frozenset({429, 503})
MIN_WINDOW_SECONDS = 2.0
MAX_WINDOW_SECONDS = 15.0
HISTORY = 120
"""Samples of the limit kept for the console (one per change, at most one a second)."""

_VERDICTS = ("good", "overload", "failed")


@dataclass
class Report:
    """What a task's requests met since it last told Redis."""

    good: int = 0
    overload: int = 0
    failed: int = 0
    """Failed answers of any kind: overloads, other retryable statuses, timeouts."""
    retry_after: float = 0.0
    last_error: str = ""

    def add(self, outcome: Outcome) -> None:
        verdict = judge(outcome)
        if verdict is None:
            return
        if verdict == "good":
            self.good += 1
            return
        self.failed += 1
        self.overload += verdict == "overload"
        self.last_error = outcome.reason[:200]
        if asks_pause(outcome):
            self.retry_after = max(self.retry_after, outcome.retry_after or 0.0)

    @property
    def empty(self) -> bool:
        return not (self.good or self.failed)

    def args(self) -> list[Any]:
        return [self.good, self.overload, self.failed, int(self.retry_after * 1000),
                self.last_error]


def asks_pause(outcome: Outcome) -> bool:
    """A 429 or 503 with ``Retry-After``: the endpoint asks for no request until then."""
    return bool(outcome.retry_after and outcome.error is not None
                and outcome.error.status in OVERLOAD_STATUSES)


def judge(outcome: Outcome) -> str | None:
    """``good`` (the endpoint answered), ``overload`` (it refused for load, or did not answer),
    ``failed`` (another retryable answer), or None (nothing about the endpoint: a rate-limit
    wait, a record never sent, a refused destination)."""
    if outcome.kind == "delivered":
        return "good"
    error: DeliveryError | None = outcome.error
    if error is None:
        return None
    if outcome.kind == "dead" and not outcome.reason.startswith("gave up"):
        return "good" if error.status is not None else None
    if error.status is None or error.status in OVERLOAD_STATUSES:
        return "overload"
    return "failed"


@dataclass
class Verdict:
    """What the permits script answered: the permits granted, how long to wait before asking
    again (a pause or an open breaker), whether the job is at full health (then all-good
    answers need no report), and how many permits in use are over the (shrunk) limit, of
    how many: a task gives back its share of those by ending lanes."""

    tokens: list[str] = field(default_factory=list)
    wait: float = 0.0
    healthy: bool = False
    excess: int = 0
    in_use: int = 0
    moved: str = ""
    """The breaker's change this call made (``closed>open``), or ""."""

    def shed(self, lanes: int) -> int:
        """How many of a task's ``lanes`` to end: its share of the excess."""
        if not self.excess or not self.in_use:
            return 0
        return min(lanes, -(-self.excess * lanes // self.in_use))


def parse(reply: Any) -> Verdict:
    """The permits script's reply: ``[wait ms, healthy, excess, in use, moved, token...]``."""
    text = [any_as_text(r) for r in reply]
    return Verdict(text[5:], int(text[0]) / 1000, text[1] == "1", int(text[2]), int(text[3]),
                   text[4])


def settings_args(job: Any) -> list[Any]:
    """The job's health settings as the script takes them."""
    return [1 if job.adaptive else 0, job.breaker_failures,
            int(MIN_WINDOW_SECONDS * 1000), int(MAX_WINDOW_SECONDS * 1000)]


def read(client: Any, job_id: str) -> dict[str, Any]:
    """``status``'s ``endpoint``: state, current limit, since when, the last error."""
    raw = {as_text(k): as_text(v)
           for k, v in client.hgetall(keys.endpoint_health(job_id)).items()}
    now = time.time()
    state = raw.get("state", "closed")
    if state == "open" and float(raw.get("open_until", 0)) / 1000 <= now:
        state = "half-open"  # the next request is the probe
    shown: dict[str, Any] = {
        "state": state, "limit": round(float(raw["limit"]), 1) if "limit" in raw else None,
        "since": float(raw["since"]) / 1000 if "since" in raw else None,
        "last_error": raw.get("last_error") or None,
        "refused": int(raw.get("refused", 0))}
    pause = float(raw.get("pause_until", 0)) / 1000
    if pause > now:
        shown["paused_until"] = pause
    return shown


def state(client: Any, job_id: str) -> State:
    """The breaker's state as stored (``open`` past its window is still ``open`` here)."""
    raw = client.hget(keys.endpoint_health(job_id), "state")
    text = None if raw is None else as_text(raw)
    return text if text in ("open", "half-open") else "closed"  # type: ignore[return-value]


def overdue(client: Any, job_id: str, pause_after: float) -> str | None:
    """Why the job must stop, when its breaker has been open longer than ``pause_after``."""
    state, down_since = client.hmget(keys.endpoint_health(job_id), "state", "down_since")
    if state not in (b"open", b"half-open", "open", "half-open") or not down_since:
        return None
    down = time.time() - float(down_since) / 1000
    if down <= pause_after:
        return None
    return (f"stopped: the endpoint has failed for {down:.0f} s with its circuit breaker open "
            f"(pause_after {pause_after:g} s)")


def history(client: Any, job_id: str) -> list[list[float]]:
    """``[[unix time, limit], …]``, oldest first: the console's chart."""
    return [json.loads(s) for s in client.lrange(keys.endpoint_history(job_id), 0, -1)]
