"""Where a webhook may go: an ``https`` URL (``http`` only when configured) whose host resolves
to public addresses only — the prober's SSRF rule (:mod:`emailintel.smtp.guard`). The URL is
checked when registered; the addresses again at every dispatch, and the request then goes to
the checked address (a DNS answer that changes in between cannot point it inward).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from emailintel.smtp.guard import is_forbidden

__all__ = ["MAX_URL_LENGTH", "Destination", "DestinationError", "parse_url", "resolve"]

MAX_URL_LENGTH = 2048
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_MAX_ADDRESSES = 16


class DestinationError(Exception):
    """A URL or address that may not receive webhooks; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Destination:
    """A checked URL: scheme, host (IDNA, lower case), port and the path with its query."""

    scheme: str
    host: str
    port: int
    target: str

    def url_for(self, address: str) -> str:
        """The URL with ``address`` in place of the host (the request goes there)."""
        shown = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{shown}:{self.port}{self.target}"

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the name the receiver expects."""
        default = 443 if self.scheme == "https" else 80
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == default else f"{shown}:{self.port}"


def parse_url(url: str, *, allow_http: bool = False, allow_private: bool = False) -> Destination:
    """The destination of ``url``, or DestinationError (scheme, credentials, host, port,
    length, or a private address literal / local name)."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationError("url_too_long", f"The URL is longer than {MAX_URL_LENGTH}.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise DestinationError("url_invalid", "The URL holds spaces or control characters.")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationError("url_invalid", "The URL does not parse.") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise DestinationError("url_scheme", "Webhook URLs use https.")
    if parts.username is not None or parts.password is not None:
        raise DestinationError("url_credentials", "Webhook URLs carry no user or password.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise DestinationError("url_invalid", "The URL has no host.")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise DestinationError("url_invalid", "The URL's host is not a valid name.") from None
    if not allow_private:
        if _is_ip(host):
            if is_forbidden(host):
                raise DestinationError(
                    "destination_forbidden", "Webhooks are not sent to private addresses."
                )
        elif host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            raise DestinationError(
                "destination_forbidden", "Webhooks are not sent to local host names."
            )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(scheme, host, port or (443 if scheme == "https" else 80), target)


async def resolve(destination: Destination, *, allow_private: bool = False) -> str:
    """A checked address to send to: every address the host resolves to must be public
    (one private answer refuses the lot: a mixed answer is how rebinding attacks look)."""
    if _is_ip(destination.host):
        addresses = [destination.host]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                destination.host, destination.port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            raise DestinationError("destination_unresolved", "The host does not resolve.") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))[:_MAX_ADDRESSES]
    if not addresses:
        raise DestinationError("destination_unresolved", "The host does not resolve.")
    if not allow_private and any(is_forbidden(a) for a in addresses):
        raise DestinationError("destination_forbidden", "The host resolves to a private address.")
    return addresses[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
