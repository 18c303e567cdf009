"""The responses topic's records, and what becomes of those Kafka does not take (unit)."""

from __future__ import annotations

from typing import Any

from rest_consumer.core.messages import TaskMessage
from rest_consumer.core.records import Outcome
from rest_consumer.state.responses import Response
from rest_consumer.state.topics import Refusal
from rest_consumer.worker.outcomes import MAX_LETTER_REFUSALS, TaskOutcomes
from rest_consumer.worker.responding import TaskResponses, write_responses

MESSAGE = TaskMessage("people", 2, 40, b"key", b"{}", 1000)


class Writer:
    """Answers each write as told: an offset, or a Refusal."""

    def __init__(self, *answers: int | Refusal) -> None:
        self.answers = list(answers)
        self.written: list[list[tuple[TaskMessage, Response]]] = []

    def write(self, job_id: str, responses: list[tuple[TaskMessage, Response]]) -> list[Any]:
        self.written.append(list(responses))
        return [self.answers.pop(0) for _ in responses]


def delivered(index: int, body: bytes = b'{"id": "srv-1"}') -> Outcome:
    return Outcome(index, "delivered", latency=0.012, record_id=f"r{index}",
                   answer=(201, {}, body))


def test_a_response_record_says_what_it_answers_and_is_cut_to_fit() -> None:
    response = Response(3, "delivered", 201, b"x" * 100, 1, 12.345, "https://h/p", "r3")
    key, value, headers = response.to_record(MESSAGE, max_bytes=10)
    shown = {name: value for name, value in headers}
    assert key == b"key" and value == b"x" * 10
    assert shown["__rest_consumer.status"] == b"201"
    assert shown["__rest_consumer.outcome"] == b"delivered"
    assert (shown["__rest_consumer.partition"], shown["__rest_consumer.offset"]) == (b"2", b"40")
    assert shown["__rest_consumer.index"] == b"3"
    assert shown["__rest_consumer.record_id"] == b'"r3"'
    assert shown["__rest_consumer.latency_ms"] == b"12.3"
    assert shown["__rest_consumer.truncated"] == b"value"
    assert shown["__rest_consumer.value_size"] == b"100"
    assert Response.from_args(response.to_args()) == response


def test_a_task_message_carries_its_unwritten_responses_through_the_queue() -> None:
    args = Response(0, "dead_letter", 422, b"no", reason="HTTP 422").to_args()
    message = MESSAGE.retry([], failed=False)
    carrier = TaskMessage.from_args({**message.to_args(), "rs": [args]})
    assert carrier.responses == (args,) and carrier.indexes == ()
    assert carrier.original().responses == ()


def test_only_what_the_job_asks_for_is_written() -> None:
    errors = TaskResponses("errors")
    errors.observe(MESSAGE, [delivered(0), Outcome.dead(1, "HTTP 400"), Outcome.skipped(2)])
    assert [(r.index, r.outcome, r.reason) for _, r in errors.pending] == [
        (1, "dead_letter", "HTTP 400")]
    everything = TaskResponses("all")
    everything.observe(MESSAGE, [delivered(0), Outcome.dead(1, "HTTP 400")])
    assert [r.index for _, r in everything.pending] == [0, 1]
    nothing = TaskResponses("none")
    nothing.observe(MESSAGE, [delivered(0), Outcome.dead(1, "HTTP 400")])
    assert nothing.pending == []


def test_a_response_kafka_did_not_take_goes_back_alone_and_the_record_is_not_sent_again(
) -> None:
    # Given a task that delivered two records of a message, Kafka taking one response only
    answers = TaskResponses("all")
    answers.observe(MESSAGE, [delivered(0), delivered(1)])
    out = TaskOutcomes("people")
    out.record_final(MESSAGE)
    # When its responses are written
    retries = write_responses(Writer(7, Refusal("timed out", True)), "people",  # type: ignore
                              answers, out, [])
    # Then the message is not final: it goes back with no record to send and the unwritten
    # response, which the next run writes without sending anything
    assert out.final[("people", 2)] == []
    [(again, delay)] = retries
    assert again.indexes == () and delay > 0
    assert [Response.from_args(a).index for a in again.responses] == [1]
    next_run = TaskResponses("all")
    [stripped] = next_run.carry([again])
    assert stripped.responses == () and [r.index for _, r in next_run.pending] == [1]
    assert out.counters["responses"] == 1


def test_an_unwritten_response_joins_its_messages_retry() -> None:
    answers = TaskResponses("all")
    answers.observe(MESSAGE, [delivered(0)])
    retry = (MESSAGE.retry([1], failed=True), 3.0)
    retries = write_responses(Writer(Refusal("timed out", True)), "people",  # type: ignore
                              answers, TaskOutcomes("people"), [retry])
    [(again, delay)] = retries
    assert again.indexes == (1,) and delay == 3.0 and len(again.responses) == 1


def test_a_response_refused_as_it_is_is_given_up_after_a_bound() -> None:
    answers = TaskResponses("all")
    tired = TaskMessage("people", 2, 41, letter_refusals=MAX_LETTER_REFUSALS - 1)
    answers.observe(tired, [delivered(0)])
    out = TaskOutcomes("people")
    out.record_final(tired)
    retries = write_responses(Writer(Refusal("too large", False)), "people",  # type: ignore
                              answers, out, [])
    assert retries == [] and out.final[("people", 2)] == [41]
    assert out.counters["responses_lost"] == 1


def test_a_dead_letter_kafka_did_not_take_answers_when_it_is_tried_again() -> None:
    answers = TaskResponses("errors")
    answers.observe(MESSAGE, [Outcome.dead(0, "HTTP 400"), Outcome.dead(1, "HTTP 400")])
    answers.withdraw([MESSAGE.retry([1], failed=False)])
    assert [r.index for _, r in answers.pending] == [0]
