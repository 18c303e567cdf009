"""A task's ``responses``: one record per final outcome in the job's responses topic.

The same durability rule as dead letters: a record is final only once Kafka holds its
response. A response Kafka does not take now goes back with its message (``TaskMessage.
responses``), and the next run writes it without sending the record again (a delivered
record is never re-sent for its response's sake). A response Kafka refuses as it is
``MAX_LETTER_REFUSALS`` times is given up, logged and counted, like a dead letter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaException

from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome
from rest_consumer.core.redaction import redact_url
from rest_consumer.state.responses import Response, ResponseWriter
from rest_consumer.state.topics import Refusal, TopicError
from rest_consumer.worker.outcomes import MAX_LETTER_REFUSALS, TaskOutcomes

log = logging.getLogger("rest_consumer.worker.execution")

Retries = list[tuple[TaskMessage, float]]
RESPONSE_RETRY_SECONDS = 10.0
"""How long responses Kafka did not take wait before they are written again."""


class TaskResponses:
    """The responses one task writes: its records' final outcomes the job asks for, and
    those its messages carried over from an earlier run."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        """The job's ``responses``: ``none``, ``errors`` or ``all``."""
        self.pending: list[tuple[TaskMessage, Response]] = []

    def carry(self, messages: list[TaskMessage]) -> list[TaskMessage]:
        """Take over what ``messages`` carried; returns them without it."""
        stripped = [replace(m, responses=()) if m.responses else m for m in messages]
        for carrier, message in zip(messages, stripped, strict=True):
            self.pending += [(message, Response.from_args(a)) for a in carrier.responses]
        return stripped

    def observe(self, message: TaskMessage, outcomes: list[Outcome]) -> None:
        """The responses of a message's final outcomes, as the job's ``responses`` asks."""
        if self.mode == "none":
            return
        for outcome in outcomes:
            if outcome.kind == "dead" or (outcome.kind == "delivered" and self.mode == "all"):
                self.pending.append((message, _response(message, outcome)))

    def withdraw(self, retried: list[TaskMessage]) -> None:
        """Dead letters Kafka did not take: their records are tried again, and answer then."""
        again = {_place(m): None if m.indexes is None else set(m.indexes) for m in retried}

        def withdrawn(message: TaskMessage, response: Response) -> bool:
            if response.outcome != "dead_letter" or _place(message) not in again:
                return False
            indexes = again[_place(message)]
            return indexes is None or response.index in indexes

        self.pending = [(m, r) for m, r in self.pending if not withdrawn(m, r)]


def _place(message: TaskMessage) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def _response(message: TaskMessage, outcome: Outcome) -> Response:
    status, body = None, b""
    if outcome.answer is not None:
        status, _, body = outcome.answer
    elif outcome.error is not None:
        status, body = outcome.error.status, outcome.error.body
    request = outcome.request
    return Response(
        outcome.index, "delivered" if outcome.kind == "delivered" else "dead_letter", status,
        body, message.attempt + int(outcome.latency is not None),
        None if outcome.latency is None else outcome.latency * 1000,
        None if request is None else redact_url(request.url, request.secret_path),
        outcome.record_id, outcome.reason if outcome.kind == "dead" else "")


def write_responses(writer: ResponseWriter, job_id: str, responses: TaskResponses,
                    out: TaskOutcomes, retries: Retries) -> Retries:
    """Write the task's responses; those Kafka did not take go back with their messages
    (merged into ``retries``, which is returned), and those messages are not final."""
    if not responses.pending:
        return retries
    try:
        results = writer.write(job_id, responses.pending)
    except (TopicError, KafkaException) as e:
        results = [Refusal(str(e), True)] * len(responses.pending)
    unwritten: dict[tuple[str, int, int], _Unwritten] = {}
    for (message, response), result in zip(responses.pending, results, strict=True):
        if isinstance(result, int):
            out.count("responses")
        elif not result.retriable and message.letter_refusals + 1 >= MAX_LETTER_REFUSALS:
            _give_up(job_id, message, response, result, out)
        else:
            entry = unwritten.setdefault(_place(message), _Unwritten(message))
            entry.responses.append(response)
            entry.refused = entry.refused or not result.retriable
    if unwritten:
        log.error("job %s: Kafka did not take %d response(s); they are written again in "
                  "%.0f s", job_id, sum(len(u.responses) for u in unwritten.values()),
                  RESPONSE_RETRY_SECONDS)
    return _merged(retries, unwritten, out)


@dataclass
class _Unwritten:
    """A message's responses Kafka did not take; ``refused``: one was refused as it is."""

    message: TaskMessage
    responses: list[Response] = field(default_factory=list)
    refused: bool = False


def _give_up(job_id: str, message: TaskMessage, response: Response, refusal: Refusal,
             out: TaskOutcomes) -> None:
    log.error("job %s %s index=%s: Kafka refused its response %d times (%s); the record is "
              "final without one", job_id, message.describe(), response.index,
              MAX_LETTER_REFUSALS, refusal.reason,
              extra={"job": job_id, "topic": message.topic, "partition": message.partition,
                     "offset": message.offset})
    out.count("responses_lost")


def _merged(retries: Retries, unwritten: dict[tuple[str, int, int], _Unwritten],
            out: TaskOutcomes) -> Retries:
    """``retries`` with each unwritten response on its message's retry (a new retry, of no
    record, for a message that had none)."""
    by_place = {_place(m): position for position, (m, _) in enumerate(retries)}
    merged = list(retries)
    for place, entry in unwritten.items():
        message, refused = entry.message, entry.refused
        args = tuple(r.to_args() for r in entry.responses)
        position = by_place.get(place)
        if position is None:
            out.unfinal(message)
            again = replace(message.retry([], failed=False), responses=args)
            merged.append((replace(again, letter_refusals=message.letter_refusals
                                   + int(refused)), RESPONSE_RETRY_SECONDS))
        else:
            retry, delay = merged[position]
            merged[position] = (replace(retry, responses=retry.responses + args,
                                        letter_refusals=retry.letter_refusals + int(refused)),
                                delay)
    return merged
