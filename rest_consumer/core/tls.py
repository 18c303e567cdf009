"""A job's TLS identity toward its endpoint: a private CA to trust and a client certificate.

The job's ``tls`` field holds PEM text: ``ca`` (one or more certificates), ``client_cert`` and
``client_key`` (mutual TLS; the key is a secret). Everything is parsed when the job is saved
(``problems``): a PEM that does not parse, a key that does not match its certificate, or a
certificate that has expired is a ``400`` naming the field. At send time each identity has one
``ssl.SSLContext`` (``Contexts``), made once: the system's trust store *and* the job's CA (a
job reaching a ministry's server and a public OAuth2 provider needs both), the client
certificate, and certificate and host checks always on; there is no way to turn them off.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

EXPIRY_WARNING = timedelta(days=14)
"""A certificate expiring sooner than this shows in ``status`` and ``/metrics``."""
MAX_CONTEXTS = 1000


@dataclass(frozen=True)
class TlsIdentity:
    """What one job trusts and presents; ``fingerprint`` names it in connection pools."""

    ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def from_job(cls, tls: dict[str, Any] | None) -> TlsIdentity | None:
        if not tls:
            return None
        return cls(tls.get("ca"), tls.get("client_cert"), tls.get("client_key"))

    @property
    def fingerprint(self) -> str:
        text = "\0".join(part or "" for part in (self.ca, self.client_cert, self.client_key))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def problems(tls: dict[str, Any], now: datetime | None = None) -> Iterator[tuple[str, str]]:
    """(field, message) for every PEM that does not parse, match or hold now."""
    now = now or datetime.now(UTC)
    ca, cert, key = tls.get("ca"), tls.get("client_cert"), tls.get("client_key")
    if isinstance(ca, str):
        try:
            for certificate in x509.load_pem_x509_certificates(ca.encode()):
                yield from _validity("tls.ca", certificate, now)
        except ValueError:
            yield "tls.ca", "is not a PEM certificate bundle"
    if (cert is None) != (key is None):
        yield ("tls.client_key" if key is None else "tls.client_cert",
               "client_cert and client_key go together")
    if not isinstance(cert, str) or not isinstance(key, str):
        return
    try:
        certificate = x509.load_pem_x509_certificate(cert.encode())
    except ValueError:
        yield "tls.client_cert", "is not a PEM certificate"
        return
    yield from _validity("tls.client_cert", certificate, now)
    if key == "***":  # a stored key kept: it was checked against this certificate before
        return
    yield from _key_problems(certificate, key)


def _key_problems(certificate: x509.Certificate, key: str) -> Iterator[tuple[str, str]]:
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError):
        yield "tls.client_key", "is not an unencrypted PEM private key"
        return
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        yield "tls.client_key", "does not match tls.client_cert"


def _validity(field: str, certificate: x509.Certificate,
              now: datetime) -> Iterator[tuple[str, str]]:
    if certificate.not_valid_after_utc <= now:
        yield field, (f"holds a certificate that expired on "
                      f"{certificate.not_valid_after_utc:%Y-%m-%d}")
    elif certificate.not_valid_before_utc > now:
        yield field, (f"holds a certificate not valid before "
                      f"{certificate.not_valid_before_utc:%Y-%m-%d}")


def earliest_expiry(tls: dict[str, Any] | None) -> datetime | None:
    """When the first of the job's certificates (CA or client) expires; None without any."""
    if not tls:
        return None
    found: list[datetime] = []
    for name in ("ca", "client_cert"):
        if isinstance(tls.get(name), str):
            try:
                found += [c.not_valid_after_utc
                          for c in x509.load_pem_x509_certificates(tls[name].encode())]
            except ValueError:
                continue
    return min(found, default=None)


def expiry_report(tls: dict[str, Any] | None,
                  now: datetime | None = None) -> dict[str, Any] | None:
    """``status``'s view: when the first certificate expires and whether that is soon."""
    expires = earliest_expiry(tls)
    if expires is None:
        return None
    now = now or datetime.now(UTC)
    return {"certificate_expires": expires.isoformat(),
            "expiring_soon": expires - now < EXPIRY_WARNING}


class Contexts:
    """One SSL context per identity, made on first use; the default one for jobs without."""

    def __init__(self) -> None:
        self.default = ssl.create_default_context()
        self._made: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def for_identity(self, identity: TlsIdentity | None) -> ssl.SSLContext:
        if identity is None:
            return self.default
        key = identity.fingerprint
        made = self._made.get(key)
        if made is None:
            with self._lock:
                if len(self._made) >= MAX_CONTEXTS:
                    self._made.clear()
                made = self._made[key] = _context(identity)
        return made


def _context(identity: TlsIdentity) -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's store; CERT_REQUIRED, host checked
    if identity.ca:
        context.load_verify_locations(cadata=identity.ca)
    if identity.client_cert and identity.client_key:
        _load_client_certificate(context, identity.client_cert, identity.client_key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``load_cert_chain`` reads files only: the PEMs live in a file only this process may
    read, for as long as the call takes."""
    fd, path = tempfile.mkstemp(prefix="rest-consumer-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(cert.strip() + "\n" + key.strip() + "\n")
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
