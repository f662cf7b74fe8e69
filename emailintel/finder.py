"""find(): a person's address at a domain, by probing pattern candidates in probability order.

Candidates come from :func:`emailintel.patterns.generate_candidates` (or are given, in order,
possibly on several domains) and are probed over one SMTP session per domain and round, stopping
at the first accepted one. On a catch-all or accept-all domain, or when the catch-all test was
inconclusive, an accept proves nothing: that is not a find, and the ranked candidates are
returned instead. A domain probes a first round of candidates; only when every one of them was
refused as an unknown mailbox (so the domain is known not to accept all) does it probe the rest
of its budget, over new sessions within the prober's error limits. Confirmed finds teach the
domain's pattern to later calls through a :class:`~emailintel.patternstore.PatternStore`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from emailintel.address import parse_address
from emailintel.dns import DnsResolver
from emailintel.errors import AddressError, ConfigError
from emailintel.models import DnsFacts, Evidence, Reason, SmtpFacts
from emailintel.mxprobe import probe_domain
from emailintel.patterns import generate_candidates, normalize_domain
from emailintel.patternstore import (
    MemoryPatternStore,
    PatternStore,
    PatternStoreError,
    pattern_store_from_env,
)
from emailintel.risk import assess
from emailintel.smtp.prober import Prober

__all__ = [
    "CandidateOutcome",
    "CandidateStatus",
    "FindResult",
    "Finder",
    "MemoryPatternStore",
    "PatternStore",
    "find",
]

log = logging.getLogger("emailintel.finder")

MAX_GIVEN = 100
"""The most explicit candidates one call may probe."""

_DNS_REASONS = {
    "nxdomain": Reason.DOMAIN_NOT_FOUND,
    "no_mx": Reason.NO_MX,
    "null_mx": Reason.NULL_MX,
    "mx_unresolvable": Reason.MX_UNRESOLVABLE,
    "timeout": Reason.DNS_TIMEOUT,
    "error": Reason.DNS_ERROR,
}

CandidateStatus = Literal[
    "accepted", "catch_all", "unproven", "rejected", "unknown", "undeliverable", "invalid",
    "not_probed",
]  # fmt: skip
"""accepted: a find; catch_all: accepted by a catch-all or accept-all domain; unproven: accepted
while the catch-all test was inconclusive; rejected: no such mailbox (or disabled); unknown: no
verdict (temporary failure, no answer); undeliverable: the domain takes no mail; invalid: not an
address; not_probed: never sent."""


class CandidateOutcome(BaseModel):
    """One candidate address, its prior (generated ones), and what SMTP said about it."""

    model_config = ConfigDict(frozen=True)

    email: str
    pattern: str | None = None
    probability: float | None = None
    variant: str | None = None
    smtp: SmtpFacts | None = None
    status: CandidateStatus = "not_probed"


class FindResult(BaseModel):
    """The answer of :func:`find`; ``found`` only when a non-catch-all server accepted ``email``.

    ``domain``: the domain searched (for given candidates, the found one's, else the first
    usable one's; None when no candidate was an address). ``dns``: that domain's lookup;
    ``lookups``: every domain's lookup, in probe order.
    """

    model_config = ConfigDict(frozen=True)

    domain: str | None
    found: bool
    email: str | None = None
    probability: float | None = None
    pattern: str | None = None
    catch_all: bool | None = None
    candidates: tuple[CandidateOutcome, ...] = ()
    reasons: tuple[Reason, ...] = ()
    dns: DnsFacts | None = None
    lookups: tuple[DnsFacts, ...] = ()


def _status(facts: SmtpFacts | None) -> CandidateStatus:
    """The outcome of one probed address under the finder's rule (a catch-all accept is no find)."""
    if facts is None:
        return "not_probed"
    if facts.accepted:
        if facts.provider_accepts_all or facts.catch_all:
            return "catch_all"
        return "accepted" if facts.catch_all is False else "unproven"
    if facts.mailbox_not_found or facts.mailbox_disabled:
        return "rejected"
    return "unknown"


def _smtp_reasons(dns: DnsFacts, facts: list[SmtpFacts]) -> list[Reason]:
    """The decisive reasons the probed candidates ended with."""
    seen: list[Reason] = []
    for fact in facts:
        reasons = assess(Evidence(dns=dns, smtp=fact)).reasons
        if reasons and reasons[0] not in seen:
            seen.append(reasons[0])
    return seen


def _accept_reason(facts: SmtpFacts) -> Reason:
    if facts.provider_accepts_all:
        return Reason.PROVIDER_ACCEPTS_ALL
    if facts.catch_all:
        return Reason.CATCH_ALL
    return Reason.CATCH_ALL_INCONCLUSIVE


class _Run:
    """Consecutive candidates at one domain: their RCPT addresses, and what probing found."""

    def __init__(self, domain: str, indexes: list[int], rcpts: list[str]) -> None:
        self.domain = domain
        self.indexes = indexes
        self.rcpts = rcpts
        self.dns: DnsFacts | None = None
        self.facts: dict[str, SmtpFacts] = {}


class Finder:
    """Holds the prober, resolver and the learned-pattern store across calls.

    ``max_candidates``: the probe budget of a domain known not to accept all; ``first_round``:
    what is probed before the domain has shown that (every one refused as an unknown mailbox).
    """

    def __init__(
        self,
        *,
        prober: Prober | None = None,
        resolver: DnsResolver | None = None,
        store: PatternStore | None = None,
        max_candidates: int = 30,
        first_round: int = 10,
    ) -> None:
        if max_candidates < 1:
            raise ConfigError(f"max_candidates must be at least 1, got {max_candidates!r}")
        if first_round < 1:
            raise ConfigError(f"first_round must be at least 1, got {first_round!r}")
        self._prober = prober
        self._resolver = resolver
        self.store: PatternStore = store if store is not None else pattern_store_from_env()
        self.max_candidates = max_candidates
        self.first_round = min(first_round, max_candidates)

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

    async def _known(self, domain: str) -> list[tuple[str, str]]:
        """The store's pairs; a failing store costs the learned ranking, not the find."""
        try:
            return await self.store.known(domain)
        except PatternStoreError as exc:
            log.warning("pattern store unreadable, using priors: %s", exc)
            return []

    async def _learn(self, domain: str, address: str, name: str) -> None:
        try:
            await self.store.add(domain, address, name)
        except PatternStoreError as exc:
            log.warning("pattern store unwritable, find not remembered: %s", exc)

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
        generated = generate_candidates(
            None,
            ascii_domain,
            first=first,
            middle=middle,
            last=last,
            company_size=company_size,
            known=await self._known(ascii_domain),
            limit=self.max_candidates,
        )
        outcomes = [
            CandidateOutcome(
                email=c.email, pattern=c.pattern, probability=c.probability, variant=c.variant
            )
            for c in generated
        ]
        run = _Run(ascii_domain, list(range(len(outcomes))), [c.email for c in generated])
        result = await self._search(outcomes, [run], ascii_domain)
        if result.found and result.email is not None:
            await self._learn(ascii_domain, result.email, full_name)
        return result

    async def find_candidates(
        self, addresses: Sequence[str], *, name: str | None = None
    ) -> FindResult:
        """Probe given addresses in order (any domains) and report the first confirmed one.

        Unparseable addresses are answered ``invalid``; repeats are probed once. With ``name``
        (the owner's full name), a find is remembered by the pattern store.
        """
        if len(addresses) > MAX_GIVEN:
            raise ConfigError(f"at most {MAX_GIVEN} candidates per call, got {len(addresses)}")
        outcomes: list[CandidateOutcome] = []
        runs: list[_Run] = []
        for index, address in enumerate(dict.fromkeys(addresses)):
            try:
                parsed = parse_address(address)
            except AddressError:
                outcomes.append(CandidateOutcome(email=address, status="invalid"))
                continue
            outcomes.append(CandidateOutcome(email=address))
            rcpt = parsed.ascii_email or f"{parsed.local_part}@{parsed.ascii_domain}"
            domain = parsed.ascii_domain
            if runs and runs[-1].domain == domain:
                runs[-1].indexes.append(index)
                runs[-1].rcpts.append(rcpt)
            else:
                runs.append(_Run(domain, [index], [rcpt]))
        result = await self._search(outcomes, runs, runs[0].domain if runs else None)
        if name and result.found and result.email is not None and result.domain is not None:
            await self._learn(result.domain, result.email, name)
        return result

    async def _probe_run(self, run: _Run) -> None:
        """Probe a run: the first round, then the rest of the budget when the domain refused
        every first-round address as an unknown mailbox."""
        todo = run.rcpts[: self.max_candidates]
        rounds = [todo[: self.first_round], todo[self.first_round :]]
        for batch in rounds:
            if not batch:
                break
            dns, facts = await probe_domain(
                run.domain, batch, resolver=self.resolver, prober=self.prober, stop_on_accept=True
            )
            run.dns = dns
            run.facts.update(facts)
            probed = [facts.get(rcpt) for rcpt in batch]
            if dns.status != "ok" or not all(f is not None and f.mailbox_not_found for f in probed):
                break

    async def _search(
        self, outcomes: list[CandidateOutcome], runs: list[_Run], domain: str | None
    ) -> FindResult:
        """Probe the runs in order until one confirms a candidate; build the answer."""
        lookups: list[DnsFacts] = []
        reasons: list[Reason] = []
        catch_all: bool | None = None
        for run in runs:
            await self._probe_run(run)
            assert run.dns is not None
            lookups.append(run.dns)
            if run.dns.status != "ok":
                for index in run.indexes:
                    outcomes[index] = outcomes[index].model_copy(update={"status": "undeliverable"})
                reasons.append(_DNS_REASONS[run.dns.status])
                continue
            hit: int | None = None
            for index, rcpt in zip(run.indexes, run.rcpts, strict=True):
                facts = run.facts.get(rcpt)
                status = _status(facts)
                outcomes[index] = outcomes[index].model_copy(
                    update={"smtp": facts, "status": status}
                )
                if hit is None and status in ("accepted", "catch_all", "unproven"):
                    hit = index
            if hit is not None and outcomes[hit].status == "accepted":
                found = outcomes[hit]
                return FindResult(
                    domain=run.domain,
                    found=True,
                    email=found.email,
                    probability=found.probability,
                    pattern=found.pattern,
                    catch_all=False,
                    candidates=tuple(outcomes),
                    reasons=(Reason.SMTP_ACCEPTED,),
                    dns=run.dns,
                    lookups=tuple(lookups),
                )
            if hit is not None:
                smtp = outcomes[hit].smtp
                assert smtp is not None
                reasons.append(_accept_reason(smtp))
                catch_all = True if smtp.catch_all or catch_all else smtp.catch_all
                continue
            reasons.extend(_smtp_reasons(run.dns, list(run.facts.values())))
        order = list(Reason)
        unique = sorted(dict.fromkeys(reasons), key=order.index)
        return FindResult(
            domain=domain,
            found=False,
            catch_all=catch_all,
            candidates=tuple(outcomes),
            reasons=tuple(unique) or (Reason.SMTP_INCONCLUSIVE,),
            dns=lookups[0] if lookups else None,
            lookups=tuple(lookups),
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
