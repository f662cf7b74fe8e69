"""probe_domain(): look a domain's MX up (with their addresses), then probe its mailboxes there.

The one place where the MX lookup meets the SMTP probe: ``verify``, ``verify_many``, ``find`` and
the server's paid endpoints all go through it, so "no route for mail, no probe" is decided once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from emailintel.dns import DnsResolver
from emailintel.models import DnsFacts, SmtpFacts

__all__ = ["DomainProbe", "probe_domain"]


class DomainProbe(NamedTuple):
    """A domain's DNS facts and the SMTP facts per probed address (empty when not probed)."""

    dns: DnsFacts
    facts: dict[str, SmtpFacts]


class _Probes(Protocol):
    """What carries the probe: a :class:`~emailintel.smtp.prober.Prober` or shared sessions."""

    async def probe(
        self,
        domain: str,
        addresses: Iterable[str],
        dns: DnsFacts,
        *,
        stop_on_accept: bool = False,
    ) -> Mapping[str, SmtpFacts]: ...


async def probe_domain(
    domain: str,
    addresses: Iterable[str],
    *,
    resolver: DnsResolver,
    prober: _Probes,
    stop_on_accept: bool = False,
    probe: bool = True,
    lookup_gate: asyncio.Semaphore | None = None,
) -> DomainProbe:
    """One MX lookup of ``domain`` (an ASCII domain), then one grouped probe of ``addresses``.

    Nothing is probed when the lookup found no route for mail (status other than ``ok``) or
    ``probe`` is off (e.g. port 25 is blocked). ``lookup_gate`` is held during the lookup only,
    so a caller can bound concurrent lookups without bounding the probes that share sessions.
    Raises what the prober raises (ConfigError for an impersonating identity, AddressError for
    an address no RCPT may carry).
    """
    gate = lookup_gate if lookup_gate is not None else contextlib.nullcontext()
    async with gate:
        dns = await resolver.lookup_mx(domain, resolve_addresses=True)
    if dns.status != "ok" or not probe:
        return DomainProbe(dns, {})
    found = await prober.probe(domain, addresses, dns, stop_on_accept=stop_on_accept)
    return DomainProbe(dns, dict(found))
