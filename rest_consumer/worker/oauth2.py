"""OAuth2 client credentials: one token per job, shared by all workers through Redis."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any
from urllib.parse import urlencode

from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.core.tls import TlsIdentity
from rest_consumer.state import keys
from rest_consumer.worker.delivery import Sender

EXPIRY_MARGIN_SECONDS = 30
LOCK_SECONDS = 30
FETCH_TIMEOUT = 30.0
"""The whole token fetch (connect, send, answer) must end within this many seconds."""
DEFAULT_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 86_400
"""A token is fetched again at least daily, whatever ``expires_in`` says."""


class TokenSource:
    """Fetches a job's token once, caches it in Redis until it expires, renews on demand."""

    def __init__(self, client: Any, sender: Sender) -> None:
        self.redis = client
        self.sender = sender

    def authorization(self, job_id: str, job_hash: str, oauth2: dict[str, Any],
                      refused: str | None = None, tls: TlsIdentity | None = None) -> str:
        """The ``Authorization`` header value for the job's requests.

        ``refused`` is a value the endpoint answered 401 to: it is renewed, unless another
        worker already did (so one rejection renews once, not once per worker).
        """
        lock = keys.oauth2_lock(job_id)
        deadline = time.monotonic() + FETCH_TIMEOUT
        while True:
            cached = self._cached(job_id, job_hash)
            if cached and cached != refused:
                return cached
            if self.redis.set(lock, "1", nx=True, ex=LOCK_SECONDS):
                try:  # check again: the previous holder may have stored a token meanwhile
                    cached = self._cached(job_id, job_hash)
                    if cached and cached != refused:
                        return cached
                    return self._fetch(job_id, job_hash, oauth2, tls)
                finally:
                    self.redis.delete(lock)
            if time.monotonic() > deadline:  # the fetching worker hangs: fetch ourselves
                return self._fetch(job_id, job_hash, oauth2, tls)
            time.sleep(0.05)  # another worker is fetching: wait for its token

    def _cached(self, job_id: str, job_hash: str) -> str | None:
        raw = self.redis.get(keys.oauth2_token(job_id))
        if raw:
            entry = json.loads(raw)
            if entry.get("hash") == job_hash:
                return str(entry["authorization"])
        return None

    def _fetch(self, job_id: str, job_hash: str, oauth2: dict[str, Any],
               tls: TlsIdentity | None = None) -> str:
        form = {"grant_type": "client_credentials"}
        if oauth2.get("scope"):
            form["scope"] = oauth2["scope"]
        basic = base64.b64encode(f"{oauth2['client_id']}:{oauth2['client_secret']}".encode())
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Authorization": "Basic " + basic.decode(), "Accept": "application/json"}
        try:
            response = self.sender.request("POST", oauth2["token_url"],
                                            urlencode(form).encode(), headers, FETCH_TIMEOUT,
                                            tls)
        except RetryableDeliveryError as e:
            raise RetryableDeliveryError(f"OAuth2 token endpoint unreachable: {e}") from e
        if response.status >= 500 or response.status == 429:
            raise RetryableDeliveryError(f"OAuth2 token endpoint answered {response.status}",
                                         response.status)
        if not 200 <= response.status < 300:
            raise PermanentDeliveryError(
                f"OAuth2 token endpoint answered {response.status}", response.status)
        try:
            body = json.loads(response.body)
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise PermanentDeliveryError(
                f"OAuth2 token endpoint answered {response.status} without an access_token",
                response.status) from None
        scheme = str(body.get("token_type") or "Bearer")
        scheme = "Bearer" if scheme.lower() == "bearer" else scheme
        authorization = f"{scheme} {token}"
        if not isinstance(token, str) or not token or any(c in authorization for c in "\r\n"):
            raise PermanentDeliveryError("OAuth2 token endpoint answered an access_token that "
                                         "is not a one-line string", response.status)
        ttl = max(1, expiry_seconds(body.get("expires_in")) - EXPIRY_MARGIN_SECONDS)
        self.redis.set(keys.oauth2_token(job_id),
                       json.dumps({"hash": job_hash, "authorization": authorization}), ex=ttl)
        return authorization


def expiry_seconds(expires_in: Any) -> int:
    """``expires_in`` as whole seconds within (0, MAX_EXPIRY_SECONDS]; the default when it is
    absent, not a number, not finite (``1e999``) or not positive."""
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_EXPIRY_SECONDS
    if not math.isfinite(seconds) or seconds <= 0:
        return DEFAULT_EXPIRY_SECONDS
    return int(min(seconds, MAX_EXPIRY_SECONDS))
