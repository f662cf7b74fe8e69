"""Pre-flight: can this machine reach port 25 at all? Checked once per run, not per address.

Most clouds and ISPs block outbound port 25; without this check a batch turns into thousands of
``unknown`` timeouts. A failed check is reported as ``port25_blocked`` on every result.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from pydantic import BaseModel, ConfigDict

from emailintel.dns import DnsResolver
from emailintel.errors import DnsError, SmtpWireError
from emailintel.models import SmtpFacts, SmtpReply
from emailintel.smtp.proxies import SmtpProxyError, open_via_proxy
from emailintel.smtp.wire import Reply, ReplyBuffer

__all__ = ["PreflightResult", "blocked_facts", "check_port25"]


class PreflightResult(BaseModel):
    """Whether a TCP connection to the target's SMTP port gave a ``220`` greeting."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    target: str
    detail: str
    elapsed_ms: float


async def _address(host: str, resolver: DnsResolver | None) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    resolver = resolver or DnsResolver.from_env()
    addresses = await resolver.resolve_host(host)
    if not addresses:
        raise DnsError(f"{host} has no address")
    return addresses[0]


async def check_port25(
    host: str,
    port: int = 25,
    *,
    wait: float = 10.0,
    resolver: DnsResolver | None = None,
    proxy: str | None = None,
) -> PreflightResult:
    """Connect to ``host:port`` (directly or through ``proxy``) and wait ``wait`` s for ``220``."""
    target = f"{host}:{port}"
    start = time.perf_counter()

    def result(ok: bool, detail: str) -> PreflightResult:
        elapsed = round((time.perf_counter() - start) * 1000, 3)
        return PreflightResult(ok=ok, target=target, detail=detail, elapsed_ms=elapsed)

    try:
        async with asyncio.timeout(wait):
            ip = await _address(host, resolver)
            if proxy is not None:
                sock = await open_via_proxy(proxy, ip, port, connect_timeout=wait)
                reader, writer = await asyncio.open_connection(sock=sock)
            else:
                reader, writer = await asyncio.open_connection(ip, port)
            try:
                greeting, head = await _greeting(reader)
            finally:
                writer.close()
    except TimeoutError:
        return result(False, f"no greeting from {target} within {wait} s")
    except (OSError, DnsError, SmtpProxyError) as exc:
        return result(False, f"cannot reach {target}: {exc}")
    if greeting is not None and greeting.code == 220:
        return result(True, f"{greeting.code} {greeting.lines[0]}")
    return result(False, f"unexpected greeting from {target}: {head!r}")


async def _greeting(reader: asyncio.StreamReader) -> tuple[Reply | None, bytes]:
    """The server's first reply (None: it closed or sent no SMTP) and its first 80 bytes."""
    buffer, head = ReplyBuffer(), b""
    while data := await reader.read(4096):
        head = (head + data)[:80]
        try:
            replies = buffer.feed(data)
        except SmtpWireError:
            return None, head
        if replies:
            return replies[0], head
    return None, head


def blocked_facts(preflight: PreflightResult) -> SmtpFacts:
    """The facts every address gets when the pre-flight failed: nothing was attempted."""
    reply = SmtpReply(stage="connect", code=None, message=preflight.detail)
    return SmtpFacts(checked=False, port25_blocked=True, reply=reply)
