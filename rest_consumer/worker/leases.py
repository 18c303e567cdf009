"""Leases kept alive while held: task claims (``claims``) and request permits (``lanes``).

A lease in Redis outlives its holder by at most its length, so a dead process's claims and
permits come back on their own; a live one renews what it holds from one daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import redis

log = logging.getLogger(__name__)

Renew = Callable[[dict[str, str]], None]
"""Renews every lease held (key -> value) in Redis."""


class LeaseRenewer:
    """Holds leases by key and renews them every ``every`` seconds until ``stop``."""

    def __init__(self, name: str, every: float, renew: Renew) -> None:
        self.name = name
        self.every = every
        self.renew = renew
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, leases: dict[str, str]) -> None:
        """Renew these from now on (the thread starts with the first lease)."""
        with self._lock:
            self._held.update(leases)
            if leases and self._thread is None:
                self._thread = threading.Thread(target=self._renew_until_stopped,
                                                name=self.name, daemon=True)
                self._thread.start()

    def release(self, keys: Iterable[str]) -> None:
        """Stop renewing these: they end with their lease, or were ended already."""
        with self._lock:
            for key in keys:
                self._held.pop(key, None)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def stop(self) -> None:
        self._stopped.set()

    def _renew_until_stopped(self) -> None:
        while not self._stopped.wait(self.every):
            held = self.held()
            if not held:
                continue
            try:
                self.renew(held)
            except redis.RedisError as e:  # the leases last a while: try again next time
                log.warning("%s: cannot renew %d lease(s) (%s); will try again", self.name,
                            len(held), e)
