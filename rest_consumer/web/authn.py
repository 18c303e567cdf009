"""Who is asking: the credentials of a request, checked, as a ``Principal``.

The bootstrap admin (``API_USER``/``API_PASSWORD``, ``API_TOKEN``) as before; stored users
(``state.users``) by Basic password or bearer token; ``METRICS_TOKEN`` for ``/metrics``
only. Failed attempts are counted per address and per user name in Redis: past a limit every
attempt from there (right or wrong) is answered ``429`` with ``Retry-After`` until the window
ends, so guessing stops being worth it while a user who types a password right is not slowed.
An Argon2 check is slow on purpose; a successful one is remembered for a while (keyed by the
stored hash, so a changed password is checked afresh) so the console's polling stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

import redis

from rest_consumer.core.config import Settings
from rest_consumer.state.users import ROLES, Role, User, UserStore

MAX_FAILURES_PER_ADDRESS = 10
MAX_FAILURES_PER_NAME = 20
FAILURE_WINDOW_SECONDS = 300
REMEMBER_SECONDS = 300.0
"""How long a successful password check is remembered."""
_REMEMBERED_MAX = 4096


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a role, and the owners whose jobs it may see (None: all)."""

    name: str
    role: Role
    owners: frozenset[str] | None
    csrf_key: bytes = b""
    """What the console's CSRF token is derived from; empty for bearer-token callers."""

    def sees(self, owner: object) -> bool:
        return self.owners is None or owner in self.owners

    def may(self, action: str) -> bool:
        """``read`` any role, ``change`` editors and admins, ``admin`` admins only."""
        allowed = {"admin": ("read", "change", "admin"), "editor": ("read", "change"),
                   "viewer": ("read",)}
        return action in allowed[self.role]


@dataclass(frozen=True)
class Refused:
    """Why credentials were refused: ``401``, or ``429`` with how long to wait."""

    status: int
    retry_after: int = 0


class Authenticator:
    """Checks a request's ``Authorization`` header; counts and limits failures."""

    def __init__(self, settings: Settings, users: UserStore) -> None:
        self.settings = settings
        self.users = users
        self.redis: redis.Redis = users.redis
        self._remembered: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, header: str, address: str,
              metrics: bool = False) -> Principal | Refused:
        """The caller, or why not. ``metrics``: ``METRICS_TOKEN`` is accepted too."""
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        name = self._basic_name(value) if scheme == "basic" else None
        if wait := self._blocked(address, name):
            return Refused(429, wait)
        if scheme == "bearer":
            principal = self._bearer(value, metrics)
        elif scheme == "basic":
            principal = self._basic(value)
        else:
            return Refused(401)
        if principal is None:
            self._failed(address, name)
            return Refused(401)
        return principal

    def quietly(self, header: str) -> Principal | None:
        """The caller, without counting a failure (``/readyz``'s details)."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._bearer(value.strip(), False)
        return self._basic(value.strip()) if scheme.lower() == "basic" else None

    # --- credentials -------------------------------------------------------------------

    def _bearer(self, token: str, metrics: bool) -> Principal | None:
        s = self.settings
        if s.api_token and hmac.compare_digest(token.encode(), s.api_token.encode()):
            return Principal(s.api_user or "admin", "admin", None)
        if metrics and s.metrics_token and hmac.compare_digest(token.encode(),
                                                               s.metrics_token.encode()):
            return Principal("metrics", "viewer", None)
        self.users.ensure_loaded()
        user = self.users.by_token(token) if token else None
        return None if user is None else _principal(user, b"")

    def _basic(self, value: str) -> Principal | None:
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            return None
        s = self.settings
        if s.api_user and s.api_password:
            name_ok = hmac.compare_digest(name.encode(), s.api_user.encode())
            password_ok = hmac.compare_digest(password.encode(), s.api_password.encode())
            if name_ok and password_ok:
                return bootstrap_admin(s)
            if name_ok:
                return None
        self.users.ensure_loaded()
        user = self.users.find(name)
        if user is None or not self._password_matches(user, password):
            return None
        return _principal(user, user.password_hash.encode())

    def _password_matches(self, user: User, password: str) -> bool:
        key = hashlib.sha256("\0".join((user.name, user.password_hash, password))
                             .encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._remembered.get(key, 0.0) > now:
                return True
        if not user.password_matches(password):
            return False
        with self._lock:
            if len(self._remembered) >= _REMEMBERED_MAX:
                self._remembered.clear()
            self._remembered[key] = now + REMEMBER_SECONDS
        return True

    @staticmethod
    def _basic_name(value: str) -> str | None:
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[0] or None
        except (binascii.Error, ValueError):
            return None

    # --- failures ----------------------------------------------------------------------

    def _counters(self, address: str, name: str | None) -> list[tuple[str, int]]:
        found = [(f"rest_consumer:login_failures:address:{address}", MAX_FAILURES_PER_ADDRESS)]
        if name:
            found.append((f"rest_consumer:login_failures:name:{name[:64]}",
                          MAX_FAILURES_PER_NAME))
        return found

    def _blocked(self, address: str, name: str | None) -> int:
        """Seconds to wait when this address or name failed too often; 0 otherwise."""
        counters = self._counters(address, name)
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in counters:
            pipe.get(key)
            pipe.ttl(key)
        replies = pipe.execute()
        waits = [max(int(ttl), 1) for (_, limit), count, ttl
                 in zip(counters, replies[::2], replies[1::2], strict=True)
                 if count is not None and int(count) >= limit]
        return max(waits, default=0)

    def _failed(self, address: str, name: str | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in self._counters(address, name):
            pipe.set(key, 0, ex=FAILURE_WINDOW_SECONDS, nx=True)  # the window starts
            pipe.incr(key)
        pipe.execute()


def bootstrap_admin(settings: Settings) -> Principal:
    """``API_USER`` with ``API_PASSWORD``: an admin whose console token derives from it."""
    return Principal(settings.api_user, "admin", None, settings.api_password.encode())


def _principal(user: User, csrf_key: bytes) -> Principal:
    role: Role = user.role if user.role in ROLES else "viewer"
    return Principal(user.name, role, None if role == "admin" else frozenset(user.owners),
                     csrf_key)
