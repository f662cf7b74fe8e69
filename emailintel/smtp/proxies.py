"""SOCKS4/5 proxies for SMTP probes, routed per provider (python-socks, asyncio backend).

Port 25 is blocked on most clouds; a proxy with open port 25 is the usual way out. The socket
python-socks connects is handed to :class:`SmtpSession` as ``sock=``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

from emailintel.errors import ConfigError
from emailintel.smtp.session import SmtpSessionError

__all__ = ["ProxyConfig", "SmtpProxyError", "open_via_proxy"]

_SCHEMES = frozenset({"socks4", "socks4a", "socks5", "socks5h"})


class SmtpProxyError(SmtpSessionError):
    """The proxy could not be reached, refused us, or could not reach the MX."""


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        raise ConfigError(f"proxy must be a socks4:// or socks5:// URL with a host, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"proxy URL has a bad port: {url!r}") from None
    return url


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """A default proxy (or None: direct) and per-provider overrides (provider name -> URL)."""

    default: str | None = None
    by_provider: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default is not None:
            _check_url(self.default)
        for url in self.by_provider.values():
            _check_url(url)

    def for_provider(self, provider: str | None) -> str | None:
        """The proxy URL to use for an MX of ``provider`` (None: connect directly)."""
        if provider is not None and provider in self.by_provider:
            return self.by_provider[provider]
        return self.default


async def open_via_proxy(
    url: str, host_ip: str, port: int, *, connect_timeout: float
) -> socket.socket:
    """A socket connected through the proxy at ``url`` to ``host_ip:port``."""
    proxy = Proxy.from_url(_check_url(url))
    try:
        sock: socket.socket = await proxy.connect(
            dest_host=host_ip, dest_port=port, timeout=connect_timeout
        )
    except ProxyTimeoutError as exc:
        raise SmtpProxyError("connect", f"proxy timed out: {exc}") from None
    except (ProxyConnectionError, ProxyError, OSError) as exc:
        raise SmtpProxyError("connect", f"proxy failed: {exc}") from None
    sock.setblocking(False)
    return sock
