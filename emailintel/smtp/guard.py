"""SSRF guard: refuse to dial MX addresses that point into private or special-purpose networks.

An attacker who controls a domain's MX (or A) record could otherwise make the prober connect to
loopback, the cloud metadata service or an internal host. IPv6 forms that carry an IPv4 address
(6to4, Teredo, NAT64, mapped, compatible) are judged by it, since ``is_global`` is not. Pure: it
classifies addresses only.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from emailintel.errors import ConfigError

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "AddressClass",
    "allow_private_from_env",
    "classify_address",
    "dialable",
    "is_forbidden",
]

ALLOW_PRIVATE_ENV: Final = "EMAILINTEL_ALLOW_PRIVATE_MX"

AddressClass = Literal[
    "unspecified", "loopback", "link_local", "multicast", "cgnat", "private", "reserved"
]

_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
_SITE_LOCAL: Final = ipaddress.ip_network("fec0::/10")  # deprecated (RFC 3879), still private
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use prefix
_V4: Final = 0xFFFFFFFF
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


def classify_address(address: str) -> AddressClass | None:
    """The special-purpose class of an IP address, or None for a public (global) address.

    IPv6 forms that embed IPv4 addresses (mapped, compatible, 6to4, Teredo, NAT64) take the class
    of a forbidden embedded address; an IPv4-mapped address is judged by its IPv4 part alone, the
    others must also be public themselves. Site-local ``fec0::/10`` and local-use NAT64 are
    private. Raises ConfigError for non-IPs.
    """
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"not an IP address: {address!r}") from None
    if isinstance(ip, ipaddress.IPv4Address):
        return _classify(ip)
    if ip.ipv4_mapped is not None:
        return _classify(ip.ipv4_mapped)
    if ip in _SITE_LOCAL or ip in _NAT64_LOCAL:
        # Local-use NAT64 reaches whatever the operator's translator reaches, with an embedding
        # layout of its choosing (RFC 6052 /32.../96): it is never a public route.
        return "private"
    for embedded in _embedded_ipv4(ip):
        if (found := _classify(embedded)) is not None:
            return found
    return _classify(ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo, IPv4-compatible, NAT64 /96)."""
    n = int(ip)
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # (server: bits 32-63, client: the inverted last 32 bits)
    if n >> 32 == 0 and n > 1:  # IPv4-compatible ::a.b.c.d (but not :: or ::1)
        found.append(ipaddress.IPv4Address(n & _V4))
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(n & _V4))
    return found


def _classify(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> AddressClass | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "cgnat"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


def is_forbidden(address: str) -> bool:
    """True when ``address`` is not a public unicast address."""
    return classify_address(address) is not None


def dialable(addresses: Iterable[str], *, allow_private: bool) -> tuple[str, ...]:
    """The addresses the prober may connect to, in their original order."""
    if allow_private:
        return tuple(addresses)
    return tuple(a for a in addresses if not is_forbidden(a))


def allow_private_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``$EMAILINTEL_ALLOW_PRIVATE_MX`` allows private MX addresses (for labs)."""
    raw = (os.environ if env is None else env).get(ALLOW_PRIVATE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{ALLOW_PRIVATE_ENV} must be 0/1/true/false, got {raw!r}")
