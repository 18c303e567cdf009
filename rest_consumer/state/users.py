"""The API's users: a role, the owners whose jobs they may see, a password and bearer tokens.

Users live in the compacted topic ``<CONSUMER_GROUP_PREFIX>.users`` (``KeyedLog``), with
hashes only: passwords as Argon2id (``argon2-cffi``: slow on purpose, checked in constant
time), bearer tokens as SHA-256 (a token is 256 random bits, so a fast hash is enough and a
token is found by its hash). Redis keeps a copy (``users`` and ``user_tokens``) read on every
request, so a change or a deletion holds on every API process at once; the copy is rebuilt
from the topic when Redis has lost it, as the jobs are.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rest_consumer.core.config import MIN_PASSWORD_CHARS, weak_secret_problem
from rest_consumer.core.errors import UserNotFound, ValidationError
from rest_consumer.state.joblog import KeyedLog
from rest_consumer.state.replies import as_text

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "editor", "viewer")
USERS = "rest_consumer:users"
"""Hash: user name → the stored user (JSON, hashes only)."""
TOKENS = "rest_consumer:user_tokens"
"""Hash: SHA-256 of a bearer token → the user name it belongs to."""
LOADED = "rest_consumer:users_loaded"
"""Set once Redis holds every user of the users topic."""
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
TOKEN_PREFIX = "rcu_"
"""A user's tokens start so (tell them from the bootstrap ``API_TOKEN`` in logs and scanners)."""

_hasher = PasswordHasher()


def topic_name(prefix: str) -> str:
    return f"{prefix}.users"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """A stored user, as the API shows it (never a hash)."""

    name: str
    role: Role
    owners: tuple[str, ...]
    password_hash: str = ""
    tokens: tuple[str, ...] = ()
    """SHA-256 digests of its bearer tokens."""
    modified: str = ""
    modified_by: str = ""

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "owners": list(self.owners),
                "has_password": bool(self.password_hash), "tokens": len(self.tokens),
                "modified": self.modified, "modified_by": self.modified_by}

    def stored(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "owners": list(self.owners),
                "password_hash": self.password_hash, "tokens": list(self.tokens),
                "modified": self.modified, "modified_by": self.modified_by}

    @classmethod
    def from_stored(cls, record: dict[str, Any]) -> User:
        role = record.get("role")
        return cls(str(record["name"]), role if role in ROLES else "viewer",
                   tuple(str(o) for o in record.get("owners") or ()),
                   str(record.get("password_hash") or ""),
                   tuple(str(t) for t in record.get("tokens") or ()),
                   str(record.get("modified") or ""), str(record.get("modified_by") or ""))

    def password_matches(self, password: str) -> bool:
        """Argon2's constant-time check; False for a user without a password."""
        if not self.password_hash:
            return False
        try:
            return bool(_hasher.verify(self.password_hash, password))
        except (VerificationError, InvalidHashError):
            return False


class UserStore:
    """Users in Redis, each change written first to the users topic (when there is one)."""

    def __init__(self, client: redis.Redis, log: KeyedLog | None = None,
                 reserved: str = "") -> None:
        self.redis = client
        self.log = log
        self.reserved = reserved
        """The bootstrap admin's name (``API_USER``): no stored user may take it."""

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Any) -> UserStore:
        log = KeyedLog(settings.kafka_client_config(),
                       topic_name(settings.consumer_group_prefix), "name")
        return cls(client, log, settings.api_user)

    def ensure_loaded(self) -> int:
        """Rebuild Redis's copy from the topic if Redis lost it; returns users restored."""
        if self.log is None or self.redis.exists(LOADED):
            return 0
        logged = self.log.read()
        pipe = self.redis.pipeline()
        for record in logged.values():
            self._cache(pipe, User.from_stored(record))
        pipe.set(LOADED, "1")
        pipe.execute()
        return len(logged)

    def find(self, name: str) -> User | None:
        raw = self.redis.hget(USERS, name)
        return User.from_stored(json.loads(raw)) if raw else None

    def by_token(self, token: str) -> User | None:
        """The user a bearer token belongs to, if it still does."""
        name = self.redis.hget(TOKENS, token_digest(token))
        if name is None:
            return None
        user = self.find(as_text(name))
        return user if user is not None and token_digest(token) in user.tokens else None

    def list(self) -> list[User]:
        return sorted((User.from_stored(json.loads(raw))
                       for raw in self.redis.hvals(USERS)), key=lambda u: u.name)

    def upsert(self, name: str, doc: Any, by: str) -> tuple[User, bool]:
        """Create or change a user (role, owners, password); returns it and whether it is new.
        A change without ``password`` keeps the stored one; its tokens are kept."""
        stored = self.find(name)
        role, owners, password = self._validated(name, doc, stored)
        user = User(name, role, owners,
                    _hasher.hash(password) if password else (stored.password_hash
                                                             if stored else ""),
                    stored.tokens if stored else (), _now(), by)
        self._save(user, stored)
        return user, stored is None

    def new_token(self, name: str, by: str) -> str:
        """A new bearer token for the user, shown once (only its hash is kept)."""
        user = self._existing(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        changed = User(user.name, user.role, user.owners, user.password_hash,
                       (*user.tokens, token_digest(token)), _now(), by)
        self._save(changed, user)
        return token

    def delete(self, name: str) -> User:
        user = self._existing(name)
        if self.log is not None:
            self.log.tombstone(name)
        pipe = self.redis.pipeline()
        pipe.hdel(USERS, name)
        for digest in user.tokens:
            pipe.hdel(TOKENS, digest)
        pipe.execute()
        return user

    def _existing(self, name: str) -> User:
        user = self.find(name)
        if user is None:
            raise UserNotFound(name)
        return user

    def _save(self, user: User, stored: User | None) -> None:
        """Kafka first: if it refuses, Redis stays as it was."""
        if self.log is not None:
            self.log.put(user.stored())
        pipe = self.redis.pipeline()
        for digest in set(stored.tokens if stored else ()) - set(user.tokens):
            pipe.hdel(TOKENS, digest)
        self._cache(pipe, user)
        pipe.execute()

    @staticmethod
    def _cache(pipe: Any, user: User) -> None:
        pipe.hset(USERS, user.name, json.dumps(user.stored(), sort_keys=True))
        for digest in user.tokens:
            pipe.hset(TOKENS, digest, user.name)

    def _validated(self, name: str, doc: Any,
                   stored: User | None) -> tuple[Role, tuple[str, ...], str]:
        """Role, owners and password of a user document; every problem at once (400)."""
        problems: list[dict[str, Any]] = []
        if not NAME.match(name) or name == self.reserved:
            problems.append({"field": "name", "message": "1-64 letters, digits or . _ @ -, "
                             "and not the bootstrap admin's name"})
        if not isinstance(doc, dict):
            raise ValidationError([*problems, {"field": "", "message":
                                                  "the user must be a JSON object"}])
        problems += [{"field": k, "message": "unknown field"} for k in doc
                     if k not in ("name", "role", "owners", "password")]
        role = doc.get("role")
        if role not in ROLES:
            problems.append({"field": "role", "message": "one of admin, editor, viewer"})
        owners = doc.get("owners", [])
        if not isinstance(owners, list) or not all(isinstance(o, str) and o for o in owners):
            problems.append({"field": "owners", "message": "a list of owner names"})
            owners = []
        password = doc.get("password")
        if password is None and stored is None:
            problems.append({"field": "password", "message": "a new user needs a password"})
        elif password is not None and (not isinstance(password, str) or (
                problem := weak_secret_problem("password", password, MIN_PASSWORD_CHARS))):
            problems.append({"field": "password", "message": problem if isinstance(
                password, str) else "a string"})
        if problems:
            raise ValidationError(problems)
        return cast(Role, role), tuple(owners), password or ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
