"""Async MX and address lookups over dnspython, reported as :class:`DnsFacts` evidence.

NXDOMAIN, "exists but no MX", null MX, MX hosts without addresses, timeout and other failures
stay distinct so a caller never mistakes "could not ask" for "no mail server". Answers are cached by their TTL and
concurrent lookups of one name share a single query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset
import idna

from emailintel._dnscache import SingleFlight, TtlCache
from emailintel.errors import AddressError, ConfigError, DnsError
from emailintel.models import DnsFacts, MxRecord, RecordFacts

__all__ = [
    "MAX_RECORDS",
    "MAX_RECORD_CHARS",
    "NAMESERVERS_ENV",
    "TIMEOUT_ENV",
    "DnsResolver",
    "default_resolver",
    "lookup_mx",
    "parse_nameserver",
    "to_query_name",
]

NAMESERVERS_ENV = "EMAILINTEL_NAMESERVERS"
TIMEOUT_ENV = "EMAILINTEL_DNS_TIMEOUT"
DEFAULT_PORT = 53

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_BRACKETED = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")

MAX_RECORDS = 32
"""TXT/CNAME values kept per name; more are dropped and the answer marked truncated."""
MAX_RECORD_CHARS = 4096
"""Characters kept per TXT value (its strings joined); a longer one is cut and marked truncated."""

_Kind = Literal["records", "nxdomain", "nodata", "timeout", "error"]
_QueryKey = tuple[dns.name.Name, dns.rdatatype.RdataType]


@dataclass(frozen=True)
class _Outcome:
    """The result of one (name, type) query, in the form that is cached."""

    kind: _Kind
    mx: tuple[tuple[int, dns.name.Name], ...] = ()
    addresses: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    truncated: bool = False
    error: str | None = None


def parse_nameserver(text: str) -> tuple[str, int]:
    """Parse "1.1.1.1", "127.0.0.1:5353", "::1" or "[::1]:5353" into (address, port)."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid nameserver {text!r}: expected a string")
    spec = text.strip()
    port_text: str | None = None
    if spec.startswith("["):
        match = _BRACKETED.fullmatch(spec)
        if match is None:
            raise ConfigError(f"invalid nameserver {text!r}: expected [IPv6] or [IPv6]:port")
        host, port_text = match.group(1), match.group(2)
        if ":" not in host:
            raise ConfigError(f"invalid nameserver {text!r}: brackets are only for IPv6")
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    else:
        host = spec
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"invalid nameserver {text!r}: not an IP address") from None
    port = DEFAULT_PORT
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"invalid nameserver {text!r}: port must be 1-65535")
        port = int(port_text)
    return str(address), port


def _format_nameserver(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _system_nameservers() -> list[tuple[str, int]]:
    try:
        system = dns.resolver.Resolver(configure=True)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"no usable system resolver configuration: {exc}") from exc
    servers = [
        (server.address, server.port)
        if isinstance(server, dns.nameserver.Do53Nameserver)
        else (parse_nameserver(str(server))[0], system.port)
        for server in system.nameservers
    ]
    if not servers:
        raise ConfigError("the system resolver configuration lists no nameservers")
    return servers


def _env_nameservers() -> list[str] | None:
    raw = os.environ.get(NAMESERVERS_ENV, "")
    if not raw.strip():
        return None
    return raw.split(",")


def to_query_name(domain: str) -> tuple[dns.name.Name, str]:
    """Validate a domain (Unicode or ASCII) and return its absolute DNS name and IDNA text."""
    if not isinstance(domain, str):
        raise AddressError(
            f"domain must be a string, not {type(domain).__name__}", code="domain_invalid"
        )
    text = domain[:-1] if domain.endswith(".") else domain
    if not text:
        raise AddressError("empty domain", code="domain_invalid")
    if text.isascii():
        ascii_text = text.lower()
    else:
        try:
            ascii_text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise AddressError(
                f"invalid IDN domain {domain!r}: {exc}", code="domain_invalid"
            ) from exc
    labels = ascii_text.split(".")
    if len(ascii_text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"invalid domain {domain!r}", code="domain_invalid")
    return dns.name.Name([*(label.encode("ascii") for label in labels), b""]), ascii_text


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _sorted_addresses(texts: Sequence[str]) -> tuple[str, ...]:
    addresses = {ipaddress.ip_address(text) for text in texts}
    return tuple(str(address) for address in sorted(addresses, key=lambda a: (a.version, a)))


class DnsResolver:
    """Async stub resolver for MX and host addresses with a TTL cache and single-flight."""

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        lifetime: float | None = None,
        cache: bool = True,
        max_cache_entries: int = 100_000,
        negative_ttl: float | None = None,
    ) -> None:
        """Use ``nameservers`` (else ``$EMAILINTEL_NAMESERVERS``, else the system configuration).

        ``timeout`` bounds one attempt at one server; ``lifetime`` bounds a whole query and
        defaults to one attempt per server. Negative answers are cached for the SOA's negative
        TTL unless ``negative_ttl`` overrides it.
        """
        if isinstance(nameservers, str):
            raise ConfigError("nameservers must be a sequence of strings, not one string")
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive, got {timeout!r}")
        if lifetime is not None and not lifetime > 0:
            raise ConfigError(f"lifetime must be positive, got {lifetime!r}")
        if max_cache_entries < 0:
            raise ConfigError(f"max_cache_entries must be >= 0, got {max_cache_entries!r}")
        if negative_ttl is not None and negative_ttl < 0:
            raise ConfigError(f"negative_ttl must be >= 0, got {negative_ttl!r}")
        if nameservers is None:
            nameservers = _env_nameservers()
        if nameservers is None:
            servers = _system_nameservers()
        else:
            servers = [parse_nameserver(item) for item in nameservers]
            if not servers:
                raise ConfigError("at least one nameserver is required")
        self.nameservers: tuple[str, ...] = tuple(_format_nameserver(a, p) for a, p in servers)
        self.timeout = timeout
        self.lifetime = lifetime if lifetime is not None else timeout * len(servers)
        self._negative_ttl = negative_ttl
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in servers]
        self._resolver.timeout = timeout
        self._resolver.lifetime = self.lifetime
        self._resolver.cache = None
        self._resolver.retry_servfail = False
        self._cache: TtlCache[_QueryKey, _Outcome] | None = (
            TtlCache(max_cache_entries) if cache else None
        )
        self._flight: SingleFlight[_QueryKey, _Outcome] = SingleFlight()

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float | None = None,
        lifetime: float | None = None,
        cache: bool = True,
        max_cache_entries: int = 100_000,
        negative_ttl: float | None = None,
    ) -> DnsResolver:
        """A resolver configured by ``$EMAILINTEL_NAMESERVERS`` and ``$EMAILINTEL_DNS_TIMEOUT``.

        Explicit arguments win over the environment; unset variables mean the system defaults.
        """
        if timeout is None:
            raw = os.environ.get(TIMEOUT_ENV, "").strip()
            try:
                timeout = float(raw) if raw else 5.0
            except ValueError:
                raise ConfigError(f"{TIMEOUT_ENV} is not a number: {raw!r}") from None
        return cls(
            _env_nameservers(),
            timeout=timeout,
            lifetime=lifetime,
            cache=cache,
            max_cache_entries=max_cache_entries,
            negative_ttl=negative_ttl,
        )

    def clear_cache(self) -> None:
        """Forget every cached answer."""
        if self._cache is not None:
            self._cache.clear()

    async def lookup_mx(self, domain: str, *, resolve_addresses: bool = False) -> DnsFacts:
        """MX hosts of ``domain`` by preference, with the RFC 5321 A/AAAA fallback and null MX.

        ``resolve_addresses`` also looks up every MX host's A/AAAA: when none has an address the
        status is ``mx_unresolvable`` (or ``timeout``/``error`` if a lookup could not be answered).
        """
        started = time.perf_counter()
        name, ascii_domain = to_query_name(domain)
        facts = await self._mx_facts(name, ascii_domain, resolve_addresses)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return facts.model_copy(update={"elapsed_ms": elapsed})

    async def resolve_host(self, host: str) -> tuple[str, ...]:
        """A then AAAA addresses of ``host``; () if it has none; DnsError if it could not be asked."""
        name, _ = to_query_name(host)
        v4, v6 = await self._query_a_aaaa(name)
        addresses = v4.addresses + v6.addresses
        failures = [o for o in (v4, v6) if o.kind in ("timeout", "error")]
        if not addresses and failures:
            raise DnsError(f"address lookup for {host!r} failed: {failures[0].error}")
        return addresses

    async def lookup_txt(self, name: str) -> RecordFacts:
        """The TXT records at ``name`` (each record's strings joined), bounded."""
        return await self._record_facts(name, dns.rdatatype.TXT)

    async def lookup_cname(self, name: str) -> RecordFacts:
        """The CNAME target at ``name`` (lower case, without the final dot), if any."""
        return await self._record_facts(name, dns.rdatatype.CNAME)

    async def _record_facts(self, name: str, rdtype: dns.rdatatype.RdataType) -> RecordFacts:
        query_name, ascii_name = to_query_name(name)
        outcome = await self._query(query_name, rdtype)
        kind = "ok" if outcome.kind == "records" else outcome.kind
        return RecordFacts(
            name=ascii_name,
            rdtype="TXT" if rdtype == dns.rdatatype.TXT else "CNAME",
            status=kind,
            values=outcome.texts,
            truncated=outcome.truncated,
            error=outcome.error,
        )

    async def _mx_facts(
        self, name: dns.name.Name, domain: str, resolve_addresses: bool
    ) -> DnsFacts:
        mx = await self._query(name, dns.rdatatype.MX)
        if mx.kind in ("nxdomain", "timeout", "error"):
            return DnsFacts(domain=domain, status=mx.kind, error=mx.error)
        if mx.kind == "nodata":
            return await self._implicit_mx(name, domain)
        hosts = sorted(
            {(pref, exchange) for pref, exchange in mx.mx if exchange != dns.name.root},
            key=lambda item: (item[0], _host_text(item[1])),
        )
        if not hosts:
            return DnsFacts(domain=domain, status="null_mx")
        if not resolve_addresses:
            records = tuple(MxRecord(preference=p, host=_host_text(h)) for p, h in hosts)
            return DnsFacts(domain=domain, status="ok", mx=records)
        if len(hosts) == 1:
            answers = [await self._query_a_aaaa(hosts[0][1])]
        else:
            answers = list(await asyncio.gather(*(self._query_a_aaaa(h) for _, h in hosts)))
        records = tuple(
            MxRecord(preference=pref, host=_host_text(host), addresses=v4.addresses + v6.addresses)
            for (pref, host), (v4, v6) in zip(hosts, answers, strict=True)
        )
        if any(record.addresses for record in records):
            return DnsFacts(domain=domain, status="ok", mx=records)
        # No MX host has an address: no route, unless a lookup failed and might have found one.
        outcomes = [outcome for pair in answers for outcome in pair]
        for kind in ("timeout", "error"):
            failed = next((o for o in outcomes if o.kind == kind), None)
            if failed is not None:
                return DnsFacts(domain=domain, status=failed.kind, mx=records, error=failed.error)
        return DnsFacts(domain=domain, status="mx_unresolvable", mx=records)

    async def _implicit_mx(self, name: dns.name.Name, domain: str) -> DnsFacts:
        v4, v6 = await self._query_a_aaaa(name)
        if v4.addresses or v6.addresses:
            record = MxRecord(preference=0, host=domain, addresses=v4.addresses + v6.addresses)
            fallback: Literal["A", "AAAA"] = "A" if v4.addresses else "AAAA"
            return DnsFacts(domain=domain, status="ok", mx=(record,), fallback=fallback)
        for kind in ("timeout", "error"):
            failed = next((o for o in (v4, v6) if o.kind == kind), None)
            if failed is not None:
                return DnsFacts(domain=domain, status=failed.kind, error=failed.error)
        return DnsFacts(domain=domain, status="no_mx")

    async def _query_a_aaaa(self, name: dns.name.Name) -> tuple[_Outcome, _Outcome]:
        v4 = self._cached(name, dns.rdatatype.A)
        v6 = self._cached(name, dns.rdatatype.AAAA)
        if v4 is not None and v6 is not None:
            return v4, v6  # the common cached case costs no task
        return await asyncio.gather(
            self._query(name, dns.rdatatype.A), self._query(name, dns.rdatatype.AAAA)
        )

    def _cached(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome | None:
        return None if self._cache is None else self._cache.get((name, rdtype))

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome:
        if (hit := self._cached(name, rdtype)) is not None:
            return hit
        return await self._flight.run((name, rdtype), lambda: self._fetch(name, rdtype))

    async def _fetch(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome:
        what = f"{rdtype.name} {_host_text(name)}"
        ttl = 0.0
        try:
            answer = await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            outcome = _Outcome("nxdomain")
            ttl = self._negative(_nxdomain_ttl(exc, name))
        except dns.exception.Timeout:
            outcome = _Outcome("timeout", error=f"{what}: no answer within {self.lifetime:g} s")
        except dns.exception.DNSException as exc:
            outcome = _Outcome("error", error=f"{what}: {exc}")
        else:
            minimum_ttl = answer.chaining_result.minimum_ttl
            if answer.rrset is None:
                outcome, ttl = _Outcome("nodata"), self._negative(minimum_ttl)
            else:
                outcome, ttl = _records(answer.rrset), float(minimum_ttl)
        if self._cache is not None and outcome.kind not in ("timeout", "error"):
            self._cache.put((name, rdtype), outcome, ttl)
        return outcome

    def _negative(self, soa_ttl: float) -> float:
        return float(soa_ttl) if self._negative_ttl is None else self._negative_ttl


def _nxdomain_ttl(exc: dns.resolver.NXDOMAIN, name: dns.name.Name) -> int:
    responses: dict[dns.name.Name, dns.message.QueryMessage] = exc.kwargs.get("responses", {})
    response = responses.get(name)
    if response is None:
        return 0
    try:
        return response.resolve_chaining().minimum_ttl
    except dns.exception.DNSException:
        return 0


def _records(rrset: dns.rrset.RRset) -> _Outcome:
    if rrset.rdtype == dns.rdatatype.MX:
        return _Outcome("records", mx=tuple((rd.preference, rd.exchange) for rd in rrset))
    if rrset.rdtype in (dns.rdatatype.TXT, dns.rdatatype.CNAME):
        return _texts(rrset)
    return _Outcome("records", addresses=_sorted_addresses([rd.address for rd in rrset]))


def _texts(rrset: dns.rrset.RRset) -> _Outcome:
    """TXT values (strings joined, undecodable bytes replaced) or CNAME targets, bounded."""
    texts: list[str] = []
    truncated = len(rrset) > MAX_RECORDS
    for index, rd in enumerate(rrset):
        if index >= MAX_RECORDS:
            break
        if rrset.rdtype == dns.rdatatype.TXT:
            text = b"".join(rd.strings).decode("utf-8", "replace")
        else:
            text = _host_text(rd.target)
        if len(text) > MAX_RECORD_CHARS:
            text, truncated = text[:MAX_RECORD_CHARS], True
        texts.append(text)
    return _Outcome("records", texts=tuple(texts), truncated=truncated)


_default_resolver: DnsResolver | None = None


def default_resolver() -> DnsResolver:
    """The process-wide resolver, created from the environment on first use."""
    global _default_resolver
    if _default_resolver is None:
        _default_resolver = DnsResolver.from_env()
    return _default_resolver


async def lookup_mx(
    domain: str, *, resolver: DnsResolver | None = None, resolve_addresses: bool = False
) -> DnsFacts:
    """Look up the MX facts of ``domain`` with ``resolver`` or the lazily created default one."""
    active = resolver if resolver is not None else default_resolver()
    return await active.lookup_mx(domain, resolve_addresses=resolve_addresses)
