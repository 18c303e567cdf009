"""LeaseRenewer: what is held is renewed until released or stopped (no Redis needed)."""

from __future__ import annotations

import threading

import redis

from helpers import wait_for
from rest_consumer.worker.leases import LeaseRenewer


def test_held_leases_are_renewed_until_released_and_the_renewer_stops() -> None:
    seen: list[dict[str, str]] = []
    renewer = LeaseRenewer("test-renewer", 0.02, seen.append)
    renewer.hold({"a": "1", "b": "2"})
    wait_for(lambda: len(seen) >= 2, 5, what="two renewals")
    assert seen[-1] == {"a": "1", "b": "2"}
    renewer.release(["a"])
    wait_for(lambda: seen[-1] == {"b": "2"}, 5, what="a renewal without a")
    renewer.stop()
    assert renewer._thread is not None
    renewer._thread.join(1)
    assert not renewer._thread.is_alive()


def test_a_redis_error_is_logged_and_renewing_goes_on() -> None:
    calls = threading.Semaphore(0)

    def flaky(held: dict[str, str]) -> None:
        calls.release()
        raise redis.ConnectionError("down")

    renewer = LeaseRenewer("test-renewer", 0.02, flaky)
    renewer.hold({"a": "1"})
    assert all(calls.acquire(timeout=5) for _ in range(3))
    renewer.stop()
