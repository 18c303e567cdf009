"""Where jobs may send: DESTINATION_ALLOWLIST, and the guard against internal addresses.

Internal addresses (loopback, private, link-local, CGNAT, unique-local, multicast,
unspecified, and the IPv4-mapped, NAT64, 6to4 and Teredo forms of those) are refused unless a
network entry of the allowlist names them. Host patterns (``api.example.org``,
``*.example.org``, ``*``) match names only, never IP literals. An empty allowlist means any
public destination.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from rest_consumer.core.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError

RESOLVE_CACHE_SECONDS = 30.0
MAX_CACHED_HOSTS = 10_000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_EMBEDDING_V4 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))
"""IPv4-compatible (deprecated) and IPv4-translated addresses: the last 32 bits are IPv4."""
LOCALHOST_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Allowlist:
    """Host patterns and IP networks; empty means any public destination."""

    patterns: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> Allowlist:
        """``DESTINATION_ALLOWLIST`` entries: networks (``10.1.0.0/16``, ``::1``) or patterns."""
        patterns, networks = [], []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not all(c.isalnum() or c in "-.*" for c in entry):
                raise ConfigError(f"DESTINATION_ALLOWLIST entry {entry!r} is neither a host "
                                  "pattern nor an IP network")
            patterns.append(entry)
        return cls(tuple(patterns), tuple(networks))

    @property
    def restricts_names(self) -> bool:
        """True when a name must match a pattern (any entry at all was given)."""
        return bool(self.patterns or self.networks)

    def name_allowed(self, host: str) -> bool:
        if not self.restricts_names:
            return True
        return any(fnmatch.fnmatchcase(host.lower(), p) for p in self.patterns)

    def in_networks(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)

    def address_allowed(self, address: IPAddress) -> bool:
        """A network entry allows any address it holds; otherwise only public ones pass."""
        return self.in_networks(address) or not is_internal(address)


def is_internal(address: IPAddress) -> bool:
    """True for every address that is not a public unicast one, embedded forms included."""
    if address.is_multicast or address.is_unspecified or not address.is_global:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return True  # fec0::/10: deprecated, but still routed inside some networks
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_internal(embedded)
    return False


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64 + _EMBEDDING_V4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_localhost_name(host: str) -> bool:
    """``localhost`` and every name under it, which RFC 6761 reserves for loopback."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (brackets allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def host_problem(host: str, allowlist: Allowlist) -> str | None:
    """Why a literal host may not be a destination, or None."""
    address = ip_literal(host)
    if address is not None:
        if not allowlist.address_allowed(address):
            return (f"host {host!r} is an internal address; only a network entry of "
                    "DESTINATION_ALLOWLIST allows one")
        if allowlist.restricts_names and not allowlist.in_networks(address):
            return f"address {host!r} is not in a network of DESTINATION_ALLOWLIST"
        return None
    # A name no pattern matches may still resolve into a network entry: checked at send time.
    if not allowlist.name_allowed(host) and not allowlist.networks:
        return f"host {host!r} is not in DESTINATION_ALLOWLIST"
    return None


def url_problem(url: str, allowlist: Allowlist) -> str | None:
    """Why a URL's literal host is not allowed, or None; a templated host is checked at send."""
    try:
        host = urlsplit(url).hostname
    except ValueError as e:
        return f"malformed URL: {e}"
    if host is None or "{" in host:
        return None
    return host_problem(host, allowlist)


class DestinationGuard:
    """Resolves a request's host once, checks every address, and names the one to connect to.

    The connection goes to the address that was checked, so a name cannot resolve to a
    public address for the check and to an internal one for the connection (DNS rebinding).
    """

    def __init__(self, allowlist: Allowlist) -> None:
        self.allowlist = allowlist
        self._resolved: dict[tuple[str, int], tuple[float, str]] = {}

    def address_for(self, host: str, port: int) -> str:
        """The checked address to connect to; PermanentDeliveryError when refused,
        RetryableDeliveryError when the name does not resolve now."""
        cached = self._resolved.get((host, port))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        literal = ip_literal(host)
        if literal is not None:
            if (problem := host_problem(host, self.allowlist)) is not None:
                raise PermanentDeliveryError(problem)
            return self._remember(host, port, str(literal), math.inf)
        named = self.allowlist.name_allowed(host)
        if not named and not self.allowlist.networks:
            raise PermanentDeliveryError(f"host {host!r} is not in DESTINATION_ALLOWLIST")
        addresses = self._resolve(host, port)
        if not named and not all(self.allowlist.in_networks(a) for a in addresses):
            raise PermanentDeliveryError(f"host {host!r} is not in DESTINATION_ALLOWLIST, "
                                         "nor does it resolve into one of its networks")
        address = self._check_all(host, addresses)
        return self._remember(host, port, address, time.monotonic() + RESOLVE_CACHE_SECONDS)

    def _remember(self, host: str, port: int, address: str, until: float) -> str:
        """Cache a checked answer (an IP literal's for good: it cannot change)."""
        if len(self._resolved) >= MAX_CACHED_HOSTS:
            self._resolved.clear()  # templated hosts could otherwise grow it without end
        self._resolved[(host, port)] = (until, address)
        return address

    @staticmethod
    def _resolve(host: str, port: int) -> list[IPAddress]:
        if is_localhost_name(host):  # RFC 6761 §6.3, as curl and browsers do: never asked of DNS
            return [ipaddress.ip_address(LOCALHOST_ADDRESS)]
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as e:
            raise RetryableDeliveryError(f"cannot resolve {host!r}: {e}") from e
        addresses = [ip_literal(str(info[4][0])) for info in infos]
        found = [a for a in addresses if a is not None]
        if not found:
            raise RetryableDeliveryError(f"{host!r} resolved to no address")
        return found

    def _check_all(self, host: str, addresses: list[IPAddress]) -> str:
        for address in addresses:
            if not self.allowlist.address_allowed(address):
                raise PermanentDeliveryError(
                    f"host {host!r} resolves to internal address {address}, which no network "
                    "of DESTINATION_ALLOWLIST names")
        # Prefer IPv4 when both are offered: loopback test servers and most endpoints bind it.
        addresses.sort(key=lambda a: a.version)
        return str(addresses[0])
