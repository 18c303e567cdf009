"""Destinations: internal addresses refused by default, DESTINATION_ALLOWLIST patterns and
networks, checked at validation for literal hosts and at send time for every request."""

from __future__ import annotations

import ipaddress

import pytest

from conftest import valid_job
from rest_consumer.core import jobs
from rest_consumer.core.destinations import Allowlist, DestinationGuard, is_internal
from rest_consumer.core.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError

INTERNAL = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
            "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
            "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2002:a00:1::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_and_their_embedded_forms_are_internal(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not_internal(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


def test_entries_are_split_into_networks_and_name_patterns() -> None:
    allow = Allowlist.parse(("*.example.org", "10.1.0.0/16", "::1", "API.Example.net", ""))
    assert allow.patterns == ("*.example.org", "api.example.net")
    assert [str(n) for n in allow.networks] == ["10.1.0.0/16", "::1/128"]
    with pytest.raises(ConfigError, match="DESTINATION_ALLOWLIST"):
        Allowlist.parse(("http://x/",))


def test_a_job_whose_literal_host_is_not_allowed_is_refused_by_field() -> None:
    allow = Allowlist.parse(("*.example.org",))
    assert jobs.validate(valid_job(url="https://api.example.org/{id}"), allow) == []
    problems = jobs.validate(valid_job(url="https://evil.net/{id}"), allow)
    assert problems == [{"field": "url", "message": "host 'evil.net' is not in "
                                                    "DESTINATION_ALLOWLIST"}]
    oauth = {"token_url": "http://evil.net/t", "client_id": "c", "client_secret": "s"}
    fields = {p["field"] for p in jobs.validate(valid_job(url="https://api.example.org/{id}",
                                                          oauth2=oauth), allow)}
    assert fields == {"oauth2.token_url"}


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "100.64.1.1",
                                  "[::ffff:10.0.0.1]", "0.0.0.0"])
def test_internal_literal_hosts_are_refused_by_default(host: str) -> None:
    problems = jobs.validate(valid_job(url=f"http://{host}/x/{{id}}"))
    assert [p["field"] for p in problems] == ["url"]
    assert "internal address" in problems[0]["message"]


def test_a_star_pattern_allows_public_names_but_no_ip_literal() -> None:
    allow = Allowlist.parse(("*",))
    assert jobs.validate(valid_job(url="https://anything.example/{id}"), allow) == []
    assert [p["field"] for p in jobs.validate(valid_job(url="http://8.8.8.8/{id}"), allow)] \
        == ["url"]


def test_only_a_network_entry_allows_an_internal_address() -> None:
    allow = Allowlist.parse(("127.0.0.0/8",))
    assert DestinationGuard(allow).address_for("127.0.0.1", 80) == "127.0.0.1"
    assert DestinationGuard(allow).address_for("localhost", 80) == "127.0.0.1"
    with pytest.raises(PermanentDeliveryError, match="internal address"):
        DestinationGuard(Allowlist.parse(("localhost",))).address_for("10.0.0.1", 80)
    with pytest.raises(PermanentDeliveryError, match="not in a network"):
        DestinationGuard(Allowlist.parse(("*",))).address_for("8.8.8.8", 80)


def test_a_name_resolving_to_an_internal_address_is_refused_at_send_time() -> None:
    for allow in (Allowlist(), Allowlist.parse(("localhost",)), Allowlist.parse(("*",))):
        with pytest.raises(PermanentDeliveryError, match="internal address"):
            DestinationGuard(allow).address_for("localhost", 8000)


def test_a_name_that_does_not_resolve_is_retried_never_passed() -> None:
    with pytest.raises(RetryableDeliveryError, match="cannot resolve"):
        DestinationGuard(Allowlist()).address_for("no-such-host.invalid", 80)
