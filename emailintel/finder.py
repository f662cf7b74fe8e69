"""find(): a person's address at a domain, by probing pattern candidates in probability order.

Candidates come from :func:`emailintel.patterns.generate_candidates` and are probed over one
SMTP session, stopping at the first accepted one. On a catch-all or accept-all domain an accept
proves nothing, so the ranked candidates are returned instead of a false "found". Confirmed finds
teach the domain's pattern to later calls (a bounded in-memory store).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from pydantic import BaseModel, ConfigDict

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError
from emailintel.models import DnsFacts, Evidence, Reason, SmtpFacts
from emailintel.mxprobe import probe_domain
from emailintel.patterns import Candidate, generate_candidates, normalize_domain
from emailintel.risk import assess
from emailintel.smtp.prober import Prober

__all__ = ["CandidateOutcome", "FindResult", "Finder", "PatternStore", "find"]

_DNS_REASONS = {
    "nxdomain": Reason.DOMAIN_NOT_FOUND,
    "no_mx": Reason.NO_MX,
    "null_mx": Reason.NULL_MX,
    "mx_unresolvable": Reason.MX_UNRESOLVABLE,
    "timeout": Reason.DNS_TIMEOUT,
    "error": Reason.DNS_ERROR,
}


class CandidateOutcome(BaseModel):
    """One candidate address, its prior, and what SMTP said about it (None: not probed)."""

    model_config = ConfigDict(frozen=True)

    email: str
    pattern: str
    probability: float
    variant: str
    smtp: SmtpFacts | None = None


class FindResult(BaseModel):
    """The answer of :func:`find`; ``found`` only when a non-catch-all server accepted ``email``."""

    model_config = ConfigDict(frozen=True)

    domain: str
    found: bool
    email: str | None = None
    probability: float | None = None
    pattern: str | None = None
    catch_all: bool | None = None
    candidates: tuple[CandidateOutcome, ...] = ()
    reasons: tuple[Reason, ...] = ()
    dns: DnsFacts | None = None


class PatternStore:
    """Confirmed ``(address, full name)`` pairs per domain, bounded in domains and per domain."""

    def __init__(self, *, max_domains: int = 10_000, per_domain: int = 20) -> None:
        if max_domains < 1 or per_domain < 1:
            raise ConfigError("PatternStore bounds must be at least 1")
        self.max_domains = max_domains
        self.per_domain = per_domain
        self._data: OrderedDict[str, deque[tuple[str, str]]] = OrderedDict()

    def add(self, domain: str, address: str, name: str) -> None:
        """Remember a confirmed address; the least recently used domain goes when full."""
        key = normalize_domain(domain)
        entries = self._data.pop(key, None) or deque(maxlen=self.per_domain)
        if (address, name) not in entries:
            entries.append((address, name))
        self._data[key] = entries
        while len(self._data) > self.max_domains:
            self._data.popitem(last=False)

    def known(self, domain: str) -> list[tuple[str, str]]:
        """The confirmed pairs of ``domain`` (oldest first), for ``generate_candidates(known=)``."""
        key = normalize_domain(domain)
        entries = self._data.get(key)
        if entries is None:
            return []
        self._data.move_to_end(key)
        return list(entries)

    def __len__(self) -> int:
        return len(self._data)


def _smtp_reasons(dns: DnsFacts, facts: list[SmtpFacts]) -> tuple[Reason, ...]:
    """The decisive reasons the probed candidates ended with, most important first."""
    seen: set[Reason] = set()
    for fact in facts:
        reasons = assess(Evidence(dns=dns, smtp=fact)).reasons
        if reasons:
            seen.add(reasons[0])
    order = list(Reason)
    return tuple(sorted(seen, key=order.index))


class Finder:
    """Holds the prober, resolver and the learned-pattern store across calls."""

    def __init__(
        self,
        *,
        prober: Prober | None = None,
        resolver: DnsResolver | None = None,
        store: PatternStore | None = None,
        max_candidates: int = 10,
    ) -> None:
        if max_candidates < 1:
            raise ConfigError(f"max_candidates must be at least 1, got {max_candidates!r}")
        self._prober = prober
        self._resolver = resolver
        self.store = store if store is not None else PatternStore()
        self.max_candidates = max_candidates

    @property
    def prober(self) -> Prober:
        """The SMTP prober (built from the environment on first use)."""
        if self._prober is None:
            self._prober = Prober()
        return self._prober

    @property
    def resolver(self) -> DnsResolver:
        """The DNS resolver (``EMAILINTEL_NAMESERVERS`` or the system by default)."""
        if self._resolver is None:
            self._resolver = DnsResolver.from_env()
        return self._resolver

    async def find(
        self,
        first: str,
        last: str,
        domain: str,
        *,
        middle: str | None = None,
        company_size: int | None = None,
    ) -> FindResult:
        """Probe candidates for ``first last`` at ``domain`` and report the first confirmed one."""
        ascii_domain = normalize_domain(domain)
        full_name = " ".join(part for part in (first, middle, last) if part)
        candidates = generate_candidates(
            None,
            ascii_domain,
            first=first,
            middle=middle,
            last=last,
            company_size=company_size,
            known=self.store.known(ascii_domain),
            limit=self.max_candidates,
        )
        dns, facts = await probe_domain(
            ascii_domain,
            [c.email for c in candidates],
            resolver=self.resolver,
            prober=self.prober,
            stop_on_accept=True,
        )
        if dns.status != "ok":
            return FindResult(
                domain=ascii_domain,
                found=False,
                candidates=tuple(_outcome(c, None) for c in candidates),
                reasons=(_DNS_REASONS[dns.status],),
                dns=dns,
            )
        outcomes = tuple(_outcome(c, facts.get(c.email)) for c in candidates)
        hit = next((o for o in outcomes if o.smtp is not None and o.smtp.accepted), None)
        if hit is None or hit.smtp is None:
            probed = [o.smtp for o in outcomes if o.smtp is not None]
            return FindResult(
                domain=ascii_domain,
                found=False,
                candidates=outcomes,
                reasons=_smtp_reasons(dns, probed) or (Reason.SMTP_INCONCLUSIVE,),
                dns=dns,
            )
        smtp = hit.smtp
        if smtp.provider_accepts_all or smtp.catch_all is not False:
            if smtp.provider_accepts_all:
                reason = Reason.PROVIDER_ACCEPTS_ALL
            elif smtp.catch_all:
                reason = Reason.CATCH_ALL
            else:
                reason = Reason.CATCH_ALL_INCONCLUSIVE
            return FindResult(
                domain=ascii_domain,
                found=False,
                catch_all=smtp.catch_all,
                candidates=outcomes,
                reasons=(reason,),
                dns=dns,
            )
        self.store.add(ascii_domain, hit.email, full_name)
        return FindResult(
            domain=ascii_domain,
            found=True,
            email=hit.email,
            probability=hit.probability,
            pattern=hit.pattern,
            catch_all=False,
            candidates=outcomes,
            reasons=(Reason.SMTP_ACCEPTED,),
            dns=dns,
        )


def _outcome(candidate: Candidate, facts: SmtpFacts | None) -> CandidateOutcome:
    return CandidateOutcome(
        email=candidate.email,
        pattern=candidate.pattern,
        probability=candidate.probability,
        variant=candidate.variant,
        smtp=facts,
    )


_default: Finder | None = None


async def find(
    first: str,
    last: str,
    domain: str,
    *,
    middle: str | None = None,
    company_size: int | None = None,
    finder: Finder | None = None,
) -> FindResult:
    """Find ``first last``'s address at ``domain`` (see :meth:`Finder.find`)."""
    global _default
    if finder is None:
        if _default is None:
            _default = Finder()
        finder = _default
    return await finder.find(first, last, domain, middle=middle, company_size=company_size)
