"""Sending and classifying outcomes against a real loopback server; backoff arithmetic."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rest_consumer.core.destinations import Allowlist, DestinationGuard
from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.devtools.services import free_port
from rest_consumer.worker.delivery import MAX_RETRY_DELAY, Sender, backoff, host_header, retry_after

RETRY = frozenset({408, 429, *range(500, 600)})


def loopback_sender() -> Sender:
    return Sender(DestinationGuard(Allowlist.parse(("127.0.0.0/8",))))


def spec(url: str) -> RequestSpec:
    return RequestSpec("POST", url, {"Idempotency-Key": "k"}, b"{}", {"Authorization": "x"})


def test_2xx_is_success_and_secret_headers_are_sent(endpoint: Any) -> None:
    assert loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY) == 200
    assert endpoint.received[0].headers["Authorization"] == "x"


def test_a_retryable_status_carries_retry_after(endpoint: Any) -> None:
    endpoint.respond = lambda request, seen: (429, {"Retry-After": "7"})
    with pytest.raises(RetryableDeliveryError) as caught:
        loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY)
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)


def test_other_statuses_are_permanent_with_an_excerpt(endpoint: Any) -> None:
    endpoint.respond = lambda request, seen: 404
    with pytest.raises(PermanentDeliveryError) as caught:
        loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY)
    assert caught.value.status == 404 and "told to fail" in caught.value.excerpt


def test_redirects_are_not_followed(endpoint: Any) -> None:
    endpoint.respond = lambda request, seen: (302, {"Location": "http://10.0.0.1/"})
    with pytest.raises(PermanentDeliveryError, match="HTTP 302"):
        loopback_sender().send(spec(endpoint.url + "/a"), 5, RETRY)


def test_connection_refused_and_timeouts_are_retryable(endpoint: Any) -> None:
    with pytest.raises(RetryableDeliveryError):
        loopback_sender().send(spec(f"http://127.0.0.1:{free_port()}/"), 2, RETRY)
    endpoint.delay = 1.0
    with pytest.raises(RetryableDeliveryError, match="Timeout"):
        loopback_sender().send(spec(endpoint.url + "/slow"), 0.2, RETRY)


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rand = random.Random(1)
    delays = [backoff(attempt, 1, 300, rand=rand) for attempt in range(12)]
    assert all(0 <= d <= min(300, 2 ** a) for a, d in enumerate(delays))
    assert backoff(3, 1, 300, asked=42) == 42
    assert backoff(3, 1, 300, asked=10 ** 6) == MAX_RETRY_DELAY


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("120") == 120
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_without_a_network_entry_loopback_is_refused_before_connecting(endpoint: Any) -> None:
    with pytest.raises(PermanentDeliveryError, match="internal address"):
        Sender(DestinationGuard(Allowlist())).send(spec(endpoint.url + "/a"), 5, RETRY)
    assert endpoint.received == [] and endpoint.failed == []


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
        endpoint: Any) -> None:
    port = endpoint.url.rsplit(":", 1)[1]
    sender = Sender(DestinationGuard(Allowlist.parse(("127.0.0.0/8",))))
    assert sender.send(spec(f"http://localhost:{port}/named"), 5, RETRY) == 200
    assert endpoint.received[0].headers["Host"] == f"localhost:{port}"


def test_a_header_that_is_not_latin_1_is_refused_not_crashed(endpoint: Any) -> None:
    bad = RequestSpec("POST", endpoint.url + "/a", {"X-Name": "José €"}, b"{}")
    with pytest.raises(PermanentDeliveryError, match="Latin-1"):
        loopback_sender().send(bad, 5, RETRY)


def test_thehost_header_is_written_as_http_client_wrote_it() -> None:
    assert host_header("http", "api.example.org", 80) == "api.example.org"
    assert host_header("https", "api.example.org", 8443) == "api.example.org:8443"
    assert host_header("https", "::1", 443) == "[::1]"
    assert host_header("http", "bücher.example", 80) == "xn--bcher-kva.example"
