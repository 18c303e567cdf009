"""DESTINATION_ALLOWLIST at validation and at send time, with the private-address guard."""

from __future__ import annotations

import pytest

from conftest import valid_job
from rest_consumer import jobs
from rest_consumer.destinations import DestinationGuard, host_allowed
from rest_consumer.errors import PermanentDeliveryError


def test_patterns_match_hosts() -> None:
    assert host_allowed("api.example.org", ("*.example.org",))
    assert not host_allowed("example.org.evil.net", ("*.example.org",))
    assert host_allowed("127.0.0.1", ("127.0.0.1",))


def test_a_job_whose_host_is_not_allowed_is_refused_by_field() -> None:
    allow = ("*.example.org",)
    assert jobs.validate(valid_job(url="https://api.example.org/{id}"), allow) == []
    problems = jobs.validate(valid_job(url="https://evil.net/{id}"), allow)
    assert problems == [{"field": "url", "message": "host 'evil.net' is not in "
                                                    "DESTINATION_ALLOWLIST"}]
    oauth = {"token_url": "http://evil.net/t", "client_id": "c", "client_secret": "s"}
    fields = {p["field"] for p in jobs.validate(valid_job(url="https://api.example.org/{id}",
                                                          oauth2=oauth), allow)}
    assert fields == {"oauth2.token_url"}


def test_without_an_allowlist_everything_passes() -> None:
    DestinationGuard(()).check("http://10.1.2.3/x")


def test_send_time_refuses_hosts_outside_the_list() -> None:
    guard = DestinationGuard(("*.example.org",))
    with pytest.raises(PermanentDeliveryError, match="not in DESTINATION_ALLOWLIST"):
        guard.check("http://evil.net/x")


def test_an_allowed_name_resolving_to_a_private_address_is_refused() -> None:
    guard = DestinationGuard(("localhost",))
    with pytest.raises(PermanentDeliveryError, match="internal address"):
        guard.check("http://localhost:8000/x")
    DestinationGuard(("localhost", "127.0.0.1", "::1")).check("http://localhost:8000/x")
    DestinationGuard(("127.0.0.1",)).check("http://127.0.0.1:8000/x")
