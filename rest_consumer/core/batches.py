"""Many records in one request (``request_batch``), and each record's outcome read back.

A task's records that share method, URL and headers go in requests of up to ``max_records``
records and ``max_bytes`` of bodies. A batch travels the lanes as one item (one permit, one
request, the job's rate limit, OAuth2, signing and destination guard as for any request);
its outcome then becomes each record's: all delivered, all retried, all dead letters, or,
with ``item_results``, per record as the answer says. A retried record goes back with its
message, so a retry sends only the records still pending, and a record the server accepted
is never sent again. Its ``Idempotency-Key`` is derived from its records' own keys: the same
records retried carry the same key.

For ordered jobs every batch of a task goes on one chain, one after another, so ``ordering:
key`` keeps each key's order across batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jmespath

from rest_consumer.core.bodies import (
    EXPRESSION_ERRORS,
    Forwarding,
    ItemFailure,
    ItemResults,
    answer_body,
)
from rest_consumer.core.errors import PermanentDeliveryError
from rest_consumer.core.jobs import REQUEST_BATCH_DEFAULTS
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.records import Outcome, Pending

NDJSON = "application/x-ndjson"
DEFAULT_WRAP = "records"
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_ORDERED = b"\x00batches"
"""The one chain every batch of an ordered job's task goes on."""


@dataclass(frozen=True)
class Batch(Pending):
    """One request carrying several records (``members``)."""

    members: tuple[Pending, ...] = ()
    failure: str | None = None
    """Why the batch's body could not be made (its ``wrap`` failed): not sent, each record a
    dead letter."""


class Batcher:
    """A job's ``request_batch``, compiled once."""

    def __init__(self, spec: dict[str, Any], job_id: str, constant: dict[str, Any],
                 ordered: bool, item_results: dict[str, Any] | None = None,
                 retry_statuses: frozenset[int] = frozenset(), max_retries: int = 0,
                 forwarding: Forwarding | None = None, answers: bool = False) -> None:
        self.max_records = int(spec.get("max_records", REQUEST_BATCH_DEFAULTS["max_records"]))
        self.max_bytes = int(spec.get("max_bytes", REQUEST_BATCH_DEFAULTS["max_bytes"]))
        self.ndjson = spec.get("format", "json") == "ndjson"
        self.wrap = jmespath.compile(spec.get("wrap", DEFAULT_WRAP))
        self.plain_wrap = spec.get("wrap", DEFAULT_WRAP) == DEFAULT_WRAP
        """The default ``wrap`` (the records as a JSON array): the body is joined from the
        records' own bodies, the very bytes parsing and encoding them again would give (one
        encoder makes every body), at a tenth of the cost."""
        self.job_id = job_id
        self.constant = constant
        self.ordered = ordered
        self.results = ItemResults(item_results) if item_results else None
        self.retry_statuses = retry_statuses
        self.max_retries = max_retries
        self.forwarding = forwarding or Forwarding(())
        """Forwarded Kafka headers (a ``traceparent`` differs per message) do not split
        batches; a batch carries its first record's."""
        self.answers = answers
        """Each record keeps its part of the answer (``responses``): its item, or the whole."""

    def batches(self, items: list[Pending]) -> list[Batch]:
        """``items`` as batches (in order), each of records that share a request's shape
        (method, URL, headers but the forwarded ones and ``Idempotency-Key``)."""
        open_chunks: dict[tuple[Any, ...], tuple[list[Pending], list[int]]] = {}
        order: list[list[Pending]] = []
        for item in items:
            shape = self._shape(item.request)
            size = len(item.request.body or b"") + 1
            chunk, used = open_chunks.get(shape, ([], [0]))
            if not chunk or len(chunk) >= self.max_records or used[0] + size > self.max_bytes:
                chunk, used = open_chunks[shape] = ([], [0])
                order.append(chunk)
            chunk.append(item)
            used[0] += size
        return [self._batch(members) for members in order]

    def _shape(self, request: RequestSpec) -> tuple[Any, ...]:
        # Not sorted: one job builds every record's headers in the same order.
        headers = tuple((k, v) for k, v in request.headers.items()
                        if k != "Idempotency-Key" and not self.forwarding.matches(k))
        return (request.method, request.url, headers, tuple(request.secret_headers.items()))

    def _batch(self, members: list[Pending]) -> Batch:
        first = members[0]
        bodies = [m.request.body or b"null" for m in members]
        headers = dict(first.request.headers)
        keys = sorted(m.request.headers.get("Idempotency-Key", "") for m in members)
        headers["Idempotency-Key"] = (f"{self.job_id}:batch:"
                                      + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32])
        failure = None
        if self.ndjson:
            body = b"\n".join(bodies) + b"\n"
            headers["Content-Type"] = NDJSON
        elif self.plain_wrap:
            body = b"[" + b", ".join(bodies) + b"]"
        else:
            try:
                wrapped = self.wrap.search({"records": [json.loads(b) for b in bodies],
                                            "constant": self.constant})
                body = _ENCODER.encode(wrapped).encode()
            except EXPRESSION_ERRORS as e:
                body, failure = b"", f"request_batch.wrap failed: {type(e).__name__}: {e}"[:300]
        request = dataclasses.replace(first.request, headers=headers, body=body)
        # Ordered: one chain for them all (``lanes`` chains items by position and entity).
        position, entity = (0, _ORDERED) if self.ordered else (first.position, None)
        return Batch(position, first.message, -1, request, None, entity,
                     members=tuple(members), failure=failure)

    def unsendable(self, batch: Batch) -> list[tuple[Pending, Outcome]]:
        """A batch whose body could not be made: each record a dead letter saying why."""
        return [(m, Outcome.dead(m.index, batch.failure or "", request=m.request,
                                 record_id=m.record_id)) for m in batch.members]

    def outcomes(self, batch: Batch, outcome: Outcome) -> list[tuple[Pending, Outcome]]:
        """Each record's outcome from its batch's."""
        if outcome.kind != "delivered" or self.results is None or outcome.answer is None:
            return [(m, self._as_member(outcome, m)) for m in batch.members]
        status, headers, body = outcome.answer
        keys = [(m.values or {}).get(self.results.key or "") for m in batch.members]
        read = self.results.read(status, headers, body, keys)
        return [(m, self._as_member(outcome, m, item) if failure is None
                 else self._failed(m, failure, status, _item_body(item, body)))
                for m, (failure, item) in zip(batch.members, read, strict=True)]

    def _failed(self, member: Pending, failure: ItemFailure, status: int,
                body: bytes) -> Outcome:
        """A record its item says failed: retried alone when the item's status is one the
        job retries (and attempts are left), else a dead letter with the item's answer."""
        if failure.status in self.retry_statuses and member.message.attempt < self.max_retries:
            return Outcome(member.index, "retry", failure.reason, failed=True)
        return Outcome.dead(member.index, failure.reason, request=member.request,
                            record_id=member.record_id,
                            error=PermanentDeliveryError(failure.reason, failure.status or status,
                                                         _excerpt(body), body))

    def _as_member(self, outcome: Outcome, member: Pending, item: Any = None) -> Outcome:
        """A record's share of its batch's outcome; with ``answers``, its part of the answer
        (its item where ``item_results`` found one, else the whole)."""
        answer = None
        if self.answers and outcome.answer is not None:
            status, headers, body = outcome.answer
            answer = (status, headers, _item_body(item, body))
        # The constructor, not ``dataclasses.replace``: this runs for every record of a batch.
        return Outcome(member.index, outcome.kind, outcome.reason, outcome.error,
                       member.request if outcome.request else None, member.record_id,
                       outcome.retry_after, outcome.failed, outcome.latency, answer)


def _item_body(item: Any, body: bytes) -> bytes:
    """A record's item as JSON, or the whole answer's body when it has none."""
    return body if item is None else _ENCODER.encode(item).encode()


def _excerpt(body: bytes) -> str:
    shown = answer_body(body)
    return (shown if isinstance(shown, str) else _ENCODER.encode(shown))[:500]
