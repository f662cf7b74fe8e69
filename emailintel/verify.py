"""validate(): syntax + lists + typo + DNS -> a RiskResult, with no SMTP traffic.

The pipeline gathers evidence with the pure modules (address, lists, typo), asks DNS (the one
I/O edge here), and lets the pure risk scorer decide. It is what the paid ``/email/validate``
endpoint serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from emailintel._gibberish import looks_gibberish
from emailintel.address import ParsedAddress, parse_address
from emailintel.dns import DnsResolver
from emailintel.errors import AddressError
from emailintel.lists import Lists, default_lists
from emailintel.models import DnsFacts, Evidence, RiskResult, SmtpFacts
from emailintel.risk import Assessment, RiskPolicy, assess
from emailintel.typo import suggest

__all__ = ["Validator", "validate", "validate_many", "validate_offline"]


class Validator:
    """Reusable validation pipeline; holds the resolver (and its cache), lists and risk policy."""

    def __init__(
        self,
        *,
        resolver: DnsResolver | None = None,
        lists: Lists | None = None,
        policy: RiskPolicy | None = None,
        check_dns: bool = True,
        suggest_typos: bool = True,
    ) -> None:
        self._resolver = resolver
        self._lists = lists
        self._policy = policy
        self.check_dns = check_dns
        self.suggest_typos = suggest_typos
        self._memo: dict[tuple[bool | None, ...], Assessment] = {}

    @property
    def policy(self) -> RiskPolicy | None:
        """The risk policy (fixed per validator: assessments are memoised against it)."""
        return self._policy

    @property
    def lists(self) -> Lists:
        """The offline lists in use (loaded lazily so import stays cheap)."""
        if self._lists is None:
            self._lists = default_lists()
        return self._lists

    @property
    def resolver(self) -> DnsResolver:
        """The DNS resolver in use (from ``EMAILINTEL_NAMESERVERS`` or the system by default)."""
        if self._resolver is None:
            self._resolver = DnsResolver.from_env()
        return self._resolver

    def offline_evidence(self, parsed: ParsedAddress) -> Evidence:
        """The evidence that needs no network: lists, typo, gibberish."""
        lists = self.lists
        typo = suggest(parsed) if self.suggest_typos else None
        # model_construct: every field here is already of its declared type (hot path).
        return Evidence.model_construct(
            syntax_valid=True,
            disposable=lists.is_disposable(parsed.ascii_domain),
            role_account=lists.is_role(parsed.local_part),
            free_provider=lists.is_free_provider(parsed.ascii_domain),
            gibberish=looks_gibberish(parsed.local_part),
            typo_suggestion=typo,
        )

    def result(
        self,
        address: str,
        evidence: Evidence,
        parsed: ParsedAddress | None = None,
        *,
        error: str | None = None,
    ) -> RiskResult:
        """Score the evidence and package it as the public result model."""
        assessment = self._assess(evidence)
        return RiskResult.model_construct(
            address=address,
            normalized=parsed.normalized if parsed else None,
            local_part=parsed.local_part if parsed else None,
            domain=parsed.domain if parsed else None,
            verdict=assessment.verdict,
            score=assessment.score,
            reasons=assessment.reasons,
            suggestion=evidence.typo_suggestion,
            error=error,
            disposable=evidence.disposable,
            role_account=evidence.role_account,
            free_provider=evidence.free_provider,
            dns=evidence.dns,
            smtp=evidence.smtp,
        )

    def _assess(self, evidence: Evidence) -> Assessment:
        """assess(), memoised for evidence without network facts (the offline hot path)."""
        if evidence.dns is not None or evidence.smtp is not None:
            return assess(evidence, self._policy)
        key = (
            evidence.syntax_valid,
            evidence.disposable,
            evidence.role_account,
            evidence.free_provider,
            evidence.gibberish,
            bool(evidence.typo_suggestion and evidence.typo_suggestion.strip()),
        )
        cached = self._memo.get(key)
        if cached is None:
            cached = self._memo[key] = assess(evidence, self._policy)
        return cached

    def invalid_syntax(self, address: str, exc: AddressError) -> RiskResult:
        """The result for input that does not parse: answered, invalid, with the parser's message."""
        return self.result(address, Evidence(syntax_valid=False), error=str(exc))

    def validate_offline(self, address: str) -> RiskResult:
        """Syntax, lists and typo only: no network at all (DNS and SMTP stay unknown)."""
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            return self.invalid_syntax(address, exc)
        return self.result(address, self.offline_evidence(parsed), parsed)

    async def validate(self, address: str) -> RiskResult:
        """Syntax, lists, typo and DNS (MX, null MX, implicit MX); SMTP is not contacted."""
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            return self.invalid_syntax(address, exc)
        evidence = self.offline_evidence(parsed)
        dns: DnsFacts | None = None
        if self.check_dns:
            dns = await self.resolver.lookup_mx(parsed.ascii_domain)
        evidence = evidence.model_copy(update={"dns": dns, "smtp": SmtpFacts(checked=False)})
        return self.result(address, evidence, parsed)

    async def validate_many(
        self, addresses: Iterable[str], *, concurrency: int = 64
    ) -> AsyncIterator[RiskResult]:
        """Validate many addresses concurrently, yielding results in input order."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        window: list[asyncio.Task[RiskResult]] = []
        try:
            for address in addresses:
                window.append(asyncio.create_task(self.validate(address)))
                if len(window) >= concurrency:
                    yield await window.pop(0)
            while window:
                yield await window.pop(0)
        finally:
            for task in window:
                task.cancel()


_default: Validator | None = None


def _default_validator() -> Validator:
    global _default
    if _default is None:
        _default = Validator()
    return _default


async def validate(address: str, *, validator: Validator | None = None) -> RiskResult:
    """Validate one address without SMTP (see :meth:`Validator.validate`)."""
    return await (validator or _default_validator()).validate(address)


def validate_offline(address: str, *, validator: Validator | None = None) -> RiskResult:
    """Validate one address with no network at all (see :meth:`Validator.validate_offline`)."""
    return (validator or _default_validator()).validate_offline(address)


async def validate_many(
    addresses: Iterable[str], *, concurrency: int = 64, validator: Validator | None = None
) -> AsyncIterator[RiskResult]:
    """Validate many addresses, yielding results in input order."""
    async for result in (validator or _default_validator()).validate_many(
        addresses, concurrency=concurrency
    ):
        yield result
