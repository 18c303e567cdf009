"""Which topics a job reads: RE2 regexes, never the project's own topics."""

from __future__ import annotations

import time

import pytest

from rest_consumer.core.sources import literal_prefix, resolve, topic_problem

TOPICS = ["people", "people.v2", "rest-consumer.jobs", "rest-consumer.dlq.a",
          "rest-consumer.responses.a", "__consumer_offsets", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-"]


def test_a_regex_never_matches_the_projects_own_or_kafkas_internal_topics() -> None:
    assert resolve(["^.*"], TOPICS, "rest-consumer") == [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-", "people", "people.v2"]
    assert resolve(["^people", "orders"], TOPICS, "rest-consumer") == [
        "orders", "people", "people.v2"]


def test_a_catastrophic_regex_runs_in_linear_time() -> None:
    started = time.monotonic()
    assert resolve(["^(a+)+$"], TOPICS * 100, "rest-consumer") == []
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("topic", "problem"), [
    ("rest-consumer.jobs", "own topics"),
    ("rest-consumer.dlq.other", "own topics"),
    ("^rest-consumer\\..*", "only match the project's own"),
    ("^rest-consumer\\.dlq\\.", "only match the project's own"),
    ("^(?=x)", "RE2"),
    ("^(a)\\1", "RE2"),
])
def test_own_topics_and_what_re2_cannot_run_are_refused(topic: str, problem: str) -> None:
    found = topic_problem(topic, "rest-consumer")
    assert found is not None and problem in found


@pytest.mark.parametrize("topic", ["people", "^people\\..*", "^rest.*", "^.*",
                                   "^rest-consumers?\\.x", "other-prefix.jobs"])
def test_ordinary_topics_and_regexes_are_accepted(topic: str) -> None:
    assert topic_problem(topic, "rest-consumer") is None


def test_the_literal_prefix_of_a_regex() -> None:
    assert literal_prefix("rest-consumer\\.dlq\\..*") == "rest-consumer.dlq."
    assert literal_prefix("abc?d") == "ab"
    assert literal_prefix("(x)") == ""
