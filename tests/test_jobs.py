"""The job model: validation, secrets, hash."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import valid_job
from rest_consumer.core import job_secrets, jobs
from rest_consumer.core.errors import JobValidationError


def digest(value: str) -> str:
    return f"d({value})"


def fields(job: dict[str, Any]) -> set[str]:
    return {p["field"] for p in jobs.validate(job)}


def test_a_valid_job_has_no_problem() -> None:
    assert jobs.validate(valid_job()) == []


def test_every_required_field_is_reported_by_name() -> None:
    assert fields({}) == {"id", "owner", "type", "topic", "datamap", "url"}


def test_schema_and_semantic_problems_are_reported_together() -> None:
    job = valid_job(type="FETCH", datamap={"id": "$.msg[", "name": "$.msg.name"},
                    url="ftp://example.org/{nope}", query_params=["missing"], topic=[])
    assert fields(job) == {"type", "topic", "datamap.id", "url", "query_params.0"}


def test_a_url_placeholder_must_name_a_datamap_or_constant_key() -> None:
    problems = jobs.validate(valid_job(url="http://h/{id}/{tenant}/{other}",
                                       constant={"tenant": "t1"}))
    assert problems == [{"field": "url", "message": "placeholder {other} is not a datamap or "
                                                    "constant key"}]


def test_header_templates_are_checked_like_the_url() -> None:
    assert fields(valid_job(headers={"X-Id": "{id}", "X-Bad": "{ghost}"})) == {"headers.X-Bad"}


def test_json_body_must_name_datamap_keys() -> None:
    assert fields(valid_job(json_body=["id", "ghost"])) == {"json_body.1"}


def test_only_http_urls_are_accepted() -> None:
    for url in ("file:///etc/passwd", "gopher://h/", "/relative/{id}", "http:///{id}"):
        assert fields(valid_job(url=url)) == {"url"}, url


def test_unknown_fields_are_refused_by_name() -> None:
    assert jobs.validate(valid_job(colour="blue")) == [
        {"field": "colour", "message": "is not a job field"}]


def test_ids_that_could_escape_keys_or_group_names_are_refused() -> None:
    for bad in ("a:b", "a*", "a b", "", "x" * 129, "a/b", "a\nb"):
        assert "id" in fields(valid_job(id=bad)), bad


def test_retry_on_ranges_must_not_be_empty() -> None:
    assert fields(valid_job(retry_on=["599-500"])) == {"retry_on.0"}
    assert jobs.retry_statuses(["429", "500-502"]) == {429, 500, 501, 502}


def test_emit_level_must_be_one_of_the_mask_levels() -> None:
    assert fields(valid_job(mask_levels=[1, 2, 3], emit_level=5)) == {"emit_level"}


def test_basic_auth_needs_a_password_under_either_name() -> None:
    assert fields(valid_job(basic_auth={"user": "u"})) == {"basic_auth.password"}
    assert fields(valid_job(basic_auth={"user": "u", "pw": "p"})) == set()


def test_prepare_sets_hash_and_modified_and_ignores_given_ones() -> None:
    job = jobs.prepare(valid_job(hash="forged", modified="yesterday"), "people", None, digest)
    assert job["hash"] != "forged" and len(job["hash"]) == 64
    assert job["modified"].endswith("Z") and job["modified"] != "yesterday"


def test_the_hash_is_canonical() -> None:
    a = valid_job()
    b = dict(reversed(list(valid_job().items())))
    assert jobs.job_hash(a, digest) == jobs.job_hash(b, digest)
    assert jobs.job_hash(a, digest) != jobs.job_hash(valid_job(owner="bob"), digest)


def test_the_hash_changes_with_a_secret_without_containing_it() -> None:
    one = jobs.job_hash(valid_job(token="abc"), digest)
    two = jobs.job_hash(valid_job(token="abd"), digest)
    assert one != two


def test_prepare_refuses_a_body_id_that_differs_from_the_url() -> None:
    with pytest.raises(JobValidationError) as caught:
        jobs.prepare(valid_job(id="other"), "people", None, digest)
    assert caught.value.problems[0]["field"] == "id"


def test_redact_hides_every_secret() -> None:
    job = valid_job(basic_auth={"user": "u", "password": "p1", "pw": "p2"})
    assert job_secrets.redact(job)["basic_auth"] == {"user": "u", "password": "***", "pw": "***"}
    job = valid_job(oauth2={"token_url": "https://a/t", "client_id": "c", "client_secret": "s"})
    assert job_secrets.redact(job)["oauth2"]["client_secret"] == "***"
    assert job_secrets.redact(valid_job(token="t"))["token"] == "***"


def test_redacted_secret_sent_back_keeps_the_stored_one() -> None:
    stored = jobs.prepare(valid_job(basic_auth={"user": "u", "password": "p"}), "people",
                          None, digest)
    again = jobs.prepare(job_secrets.redact(stored), "people", stored, digest)
    assert again["basic_auth"]["password"] == "p"
    assert again["hash"] == stored["hash"]


def test_redacted_secret_without_a_stored_one_is_a_problem() -> None:
    with pytest.raises(JobValidationError) as caught:
        jobs.prepare(valid_job(token="***"), "people", None, digest)
    assert caught.value.problems[0]["field"] == "token"
