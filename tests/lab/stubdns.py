"""An in-memory stand-in for emailintel's DnsResolver, for route tests that need no real DNS.

It answers ``lookup_mx`` and ``resolve_host`` (all the server's routes and readiness use) from a
table of :class:`DnsFacts`; names outside the table are NXDOMAIN. The default table mirrors a few
of the NSD lab's standard zones (tests/lab/test_stubdns.py checks that it does).
"""

from __future__ import annotations

from collections.abc import Mapping

from emailintel.dns import DnsResolver, to_query_name
from emailintel.models import DnsFacts, MxRecord

STUB_DOMAINS: dict[str, DnsFacts] = {
    "acme.test": DnsFacts(
        domain="acme.test",
        status="ok",
        mx=(MxRecord(preference=10, host="mx.acme.test", addresses=("127.0.0.2",)),),
    ),
    "multi.test": DnsFacts(
        domain="multi.test",
        status="ok",
        mx=(
            MxRecord(preference=10, host="mx1.multi.test", addresses=("127.0.0.6",)),
            MxRecord(preference=20, host="mx2.multi.test", addresses=("127.0.0.7",)),
        ),
    ),
    "nomx.test": DnsFacts(
        domain="nomx.test",
        status="ok",
        fallback="A",
        mx=(MxRecord(preference=0, host="nomx.test", addresses=("127.0.0.8",)),),
    ),
    "nullmx.test": DnsFacts(domain="nullmx.test", status="null_mx"),
}


class StubResolver(DnsResolver):
    """Answers from ``domains`` (default :data:`STUB_DOMAINS`); never sends a packet."""

    def __init__(self, domains: Mapping[str, DnsFacts] | None = None) -> None:
        # The base resolver is configured but never used: both public lookups are overridden.
        super().__init__(["127.0.0.1:9"], timeout=0.1, cache=False)
        self.domains = dict(STUB_DOMAINS if domains is None else domains)
        self.queries: list[str] = []

    async def lookup_mx(self, domain: str, *, resolve_addresses: bool = False) -> DnsFacts:
        """The table's facts for ``domain`` (MX addresses only when asked), else NXDOMAIN."""
        _, ascii_domain = to_query_name(domain)  # the same AddressError for a bad name
        self.queries.append(ascii_domain)
        facts = self.domains.get(ascii_domain, DnsFacts(domain=ascii_domain, status="nxdomain"))
        if resolve_addresses or facts.fallback is not None:
            return facts
        bare = tuple(mx.model_copy(update={"addresses": ()}) for mx in facts.mx)
        return facts.model_copy(update={"mx": bare})

    async def resolve_host(self, host: str) -> tuple[str, ...]:
        """The addresses the table gives ``host`` as an MX host; () if it names none."""
        _, ascii_host = to_query_name(host)
        self.queries.append(ascii_host)
        for facts in self.domains.values():
            for mx in facts.mx:
                if mx.host == ascii_host:
                    return mx.addresses
        return ()
