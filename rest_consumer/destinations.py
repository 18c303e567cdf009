"""DESTINATION_ALLOWLIST: which hosts jobs may send to, with a guard against private targets."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from rest_consumer.errors import PermanentDeliveryError

RESOLVE_CACHE_SECONDS = 60.0


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """True when ``host`` matches a pattern such as ``api.example.org`` or ``*.example.org``."""
    host = host.lower().strip("[]")
    return any(fnmatch.fnmatchcase(host, pattern.strip("[]")) for pattern in patterns)


def url_problem(url: str, patterns: tuple[str, ...]) -> str | None:
    """Why a URL's (literal) host is not allowed, or None; templated hosts pass here."""
    host = urlsplit(url).hostname
    if not patterns or host is None or "{" in host:
        return None
    if not host_allowed(host, patterns):
        return f"host {host!r} is not in DESTINATION_ALLOWLIST"
    return None


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
            or ip.is_multicast or ip.is_unspecified)


class DestinationGuard:
    """Checks each request's host at send time (the URL may be templated)."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._resolved: dict[str, tuple[float, list[str]]] = {}

    def check(self, url: str) -> None:
        """Raise PermanentDeliveryError when the request may not go to this URL's host."""
        if not self.patterns:
            return
        host = urlsplit(url).hostname or ""
        if not host_allowed(host, self.patterns):
            raise PermanentDeliveryError(f"host {host!r} is not in DESTINATION_ALLOWLIST")
        for address in self._addresses(host):
            # An allowed name that resolves inside the network is refused unless that
            # address is allowed itself (SSRF through DNS).
            if _is_internal(address) and not host_allowed(address, self.patterns):
                raise PermanentDeliveryError(
                    f"host {host!r} resolves to internal address {address}, which "
                    "DESTINATION_ALLOWLIST does not name")

    def _addresses(self, host: str) -> list[str]:
        cached = self._resolved.get(host)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return []  # the request itself will fail, and be retried, as a connection error
        addresses = sorted({str(info[4][0]) for info in infos})
        self._resolved[host] = (time.monotonic() + RESOLVE_CACHE_SECONDS, addresses)
        return addresses
