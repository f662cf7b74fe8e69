"""SSRF guard: refuse to dial MX addresses that point into private or special-purpose networks.

An attacker who controls a domain's MX (or A) record could otherwise make the prober connect to
loopback, the cloud metadata service or an internal host. Pure: it classifies addresses only.
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
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


def classify_address(address: str) -> AddressClass | None:
    """The special-purpose class of an IP address, or None for a public (global) address.

    IPv4-mapped IPv6 addresses are judged by their IPv4 part. Raises ConfigError for non-IPs.
    """
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"not an IP address: {address!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
