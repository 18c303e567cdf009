"""Signed requests: the job's ``signing`` field, applied to every attempt's exact body bytes.

Two schemes. ``standard-webhooks`` follows the Standard Webhooks specification (what Svix,
Hookdeck and a growing list of receivers verify): ``webhook-id`` is the request's
``Idempotency-Key`` (stable across retries), ``webhook-timestamp`` the attempt's Unix time,
``webhook-signature`` ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the key the
``whsec_<base64>`` secret holds. ``hmac-sha256`` is GitHub's style: one header (default
``X-Hub-Signature-256``) holding a prefix (default ``sha256=``) and the hex HMAC of the body.

During a rotation a job holds two secrets (``secret`` and ``previous_secret``) and both
signatures are sent: space-separated in ``webhook-signature``, as the specification allows; as
a comma-separated list in the ``hmac-sha256`` header (the receiver accepts either while it
changes over).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

STANDARD_WEBHOOKS = "standard-webhooks"
HMAC_SHA256 = "hmac-sha256"
SECRET_PREFIX = "whsec_"
DEFAULT_HEADER = "X-Hub-Signature-256"
DEFAULT_PREFIX = "sha256="
MIN_SECRET_BYTES = 16
"""The shortest key accepted (the specification asks for 24 to 64 bytes; 16 is HMAC's floor)."""


@dataclass(frozen=True)
class Signer:
    """A job's signing keys and how to present the signatures."""

    scheme: str
    keys: tuple[bytes, ...]
    header: str = DEFAULT_HEADER
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_job(cls, signing: dict[str, Any] | None) -> Signer | None:
        """The job's signer, or None when it signs nothing (the job is already valid)."""
        if not signing:
            return None
        secrets = [signing["secret"], *([signing["previous_secret"]]
                                        if signing.get("previous_secret") else [])]
        return cls(signing["scheme"], tuple(key_of(signing["scheme"], s) for s in secrets),
                   signing.get("header") or DEFAULT_HEADER,
                   DEFAULT_PREFIX if signing.get("prefix") is None else signing["prefix"])

    def headers(self, message_id: str, body: bytes | None,
                now: float | None = None) -> dict[str, str]:
        """The signature headers of one attempt at sending ``body``."""
        payload = body or b""
        if self.scheme == STANDARD_WEBHOOKS:
            stamp = str(int(time.time() if now is None else now))
            signed = f"{message_id}.{stamp}.".encode() + payload
            signatures = " ".join("v1," + base64.b64encode(_mac(key, signed)).decode()
                                  for key in self.keys)
            return {"webhook-id": message_id, "webhook-timestamp": stamp,
                    "webhook-signature": signatures}
        return {self.header: ",".join(self.prefix + _mac(key, payload).hex()
                                      for key in self.keys)}


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)  # one C call: cheaper than hmac.new


def key_of(scheme: str, secret: str) -> bytes:
    """The HMAC key a secret stands for (ValueError when it is not one)."""
    if scheme == STANDARD_WEBHOOKS:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"must start with {SECRET_PREFIX!r} followed by base64")
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"is not {SECRET_PREFIX!r} followed by base64") from None
    else:
        key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"must hold at least {MIN_SECRET_BYTES} bytes of key")
    return key


def problems(signing: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, message) for what the schema cannot check: secrets that are no keys."""
    scheme = signing.get("scheme")
    for name in ("secret", "previous_secret"):
        secret = signing.get(name)
        if isinstance(secret, str) and secret != "***" and isinstance(scheme, str):
            try:
                key_of(scheme, secret)
            except ValueError as e:
                yield f"signing.{name}", str(e)
    if scheme == STANDARD_WEBHOOKS and ("header" in signing or "prefix" in signing):
        yield "signing.header", "the standard-webhooks headers are fixed by the specification"
