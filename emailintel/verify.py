"""validate(): syntax + lists + typo + DNS -> a RiskResult; verify(): the same plus SMTP.

The pipeline gathers evidence with the pure modules (address, lists, typo), asks DNS (the one
I/O edge here), and lets the pure risk scorer decide. ``validate`` is what the paid
``/email/validate`` endpoint serves; ``verify``/``verify_many`` add the SMTP prober's facts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from emailintel import _offline
from emailintel._construct import builder, construct
from emailintel._gibberish import looks_gibberish
from emailintel.address import ParsedAddress, parse_address, parse_fast, parse_guarded
from emailintel.dns import DnsResolver
from emailintel.errors import AddressError
from emailintel.lists import Lists, default_lists
from emailintel.models import DnsFacts, Evidence, Reason, RiskResult, SmtpFacts, Verdict
from emailintel.mxprobe import probe_domain
from emailintel.risk import Assessment, RiskPolicy, assess
from emailintel.smtp.greylist import retry_greylisted
from emailintel.smtp.preflight import blocked_facts, check_port25
from emailintel.smtp.prober import Prober, SharedSessions
from emailintel.typo import suggest_domain

__all__ = [
    "RetryWait",
    "Validator",
    "validate",
    "validate_many",
    "validate_offline",
    "verify",
    "verify_many",
]

_DOMAIN_CACHE_SIZE = 100_000  # domains whose offline facts a Validator keeps
_GENERAL_CACHE_SIZE = 10_000  # offline results of addresses the part caches do not take
_INVALID = Evidence(syntax_valid=False)  # all an unparseable address tells the scorer


def _risk_result(
    address: str,
    assessment: Assessment,
    *,
    normalized: str | None = None,
    local_part: str | None = None,
    domain: str | None = None,
    suggestion: str | None = None,
    error: str | None = None,
    disposable: bool | None = None,
    role_account: bool | None = None,
    free_provider: bool | None = None,
    dns: DnsFacts | None = None,
    smtp: SmtpFacts | None = None,
) -> RiskResult:
    """The public result from an assessment and the facts behind it (values already typed)."""
    return construct(
        RiskResult,
        address=address,
        normalized=normalized,
        local_part=local_part,
        domain=domain,
        verdict=assessment.verdict,
        score=assessment.score,
        reasons=assessment.reasons,
        suggestion=suggestion,
        error=error,
        disposable=disposable,
        role_account=role_account,
        free_provider=free_provider,
        dns=dns,
        smtp=smtp,
    )


_new_result = builder(RiskResult)
_MAX_OCTETS = _offline.MAX_ADDRESS_OCTETS  # an address's limit, the part caches' arithmetic


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
        self._domains: dict[str, tuple[bool, bool, str | None]] = {}
        self._parts = _offline.Parts(lambda: self.lists, self._domain_facts)
        self._general: dict[str, RiskResult] = {}
        # (verdict, score, reasons) per combined part code, filled on first use
        self._part_memo: list[tuple[Verdict, int, tuple[Reason, ...]] | None]
        self._part_memo = [None] * _offline.CODES

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

    def _domain_facts(self, domain: str) -> tuple[bool, bool, str | None]:
        """(disposable, free provider, typo-corrected domain) for an ASCII domain, cached."""
        facts = self._domains.get(domain)
        if facts is None:
            if len(self._domains) >= _DOMAIN_CACHE_SIZE:
                self._domains.clear()
            lists = self.lists
            facts = self._domains[domain] = (
                lists.is_disposable(domain),
                lists.is_free_provider(domain),
                suggest_domain(domain) if self.suggest_typos else None,
            )
        return facts

    def offline_evidence(self, parsed: ParsedAddress) -> Evidence:
        """The evidence that needs no network: lists, typo, gibberish."""
        disposable, free, fixed_domain = self._domain_facts(parsed.ascii_domain)
        # construct: every value here is already of its declared type (hot path).
        return construct(
            Evidence,
            syntax_valid=True,
            disposable=disposable,
            role_account=self.lists.is_role(parsed.local_part),
            free_provider=free,
            gibberish=looks_gibberish(parsed.local_part),
            typo_suggestion=None if fixed_domain is None else f"{parsed.local_part}@{fixed_domain}",
            dns=None,
            smtp=None,
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
        return _risk_result(
            address,
            assessment,
            normalized=parsed.normalized if parsed else None,
            local_part=parsed.local_part if parsed else None,
            domain=parsed.domain if parsed else None,
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

    def _simple_offline(self, address: str, local: str, domain: str) -> RiskResult:
        """validate_offline for a dot-atom address with a plain domain, without intermediate models.

        Same answer as the general path (a differential test holds them together); it only skips
        building the ParsedAddress and Evidence that nobody sees.
        """
        disposable, free, fixed_domain = self._domain_facts(domain)
        role = self.lists.is_role(local)
        gibberish = looks_gibberish(local)
        suggestion = None if fixed_domain is None else f"{local}@{fixed_domain}"
        key = (True, disposable, role, free, gibberish, suggestion is not None)
        assessment = self._memo.get(key)
        if assessment is None:
            evidence = Evidence(
                syntax_valid=True,
                disposable=disposable,
                role_account=role,
                free_provider=free,
                gibberish=gibberish,
                typo_suggestion=suggestion,
            )
            assessment = self._memo[key] = assess(evidence, self._policy)
        return _risk_result(
            address,
            assessment,
            normalized=f"{local}@{domain}",
            local_part=local,
            domain=domain,
            suggestion=suggestion,
            disposable=disposable,
            role_account=role,
            free_provider=free,
        )

    def invalid_syntax(self, address: str, exc: AddressError) -> RiskResult:
        """The result for input that does not parse: answered, invalid, with the parser's message."""
        assessment = self._assess(_INVALID)
        return _risk_result(address, assessment, error=str(exc))

    def validate_offline(self, address: str) -> RiskResult:
        """Syntax, lists and typo only: no network at all (DNS and SMTP stay unknown)."""
        if type(address) is not str:
            return self._parse_offline(address)
        # The common address from cached per-part facts (equal to the general path's answer,
        # tested so); the general path takes every input a part cache refuses.
        local, at, domain = address.rpartition("@")
        if not at:
            return self._general_offline(address)
        parts = self._parts
        dom = parts.domains.get(domain) or parts.add_domain(domain)
        if dom is _offline.REFUSED_DOMAIN:
            return self._general_offline(address)
        loc = parts.locals.get(local) or parts.add_local(local)
        if loc is _offline.REFUSED_LOCAL:
            return self._general_offline(address)
        local, octets, local_code, role = loc
        if octets + len(domain) >= _MAX_OCTETS:
            return self._general_offline(address)
        domain, domain_code, disposable, free, fixed = dom
        suggestion = None if fixed is None else f"{local}@{fixed}"
        code = domain_code | local_code
        scored = self._part_memo[code]
        if scored is None:
            evidence = Evidence(
                syntax_valid=True,
                disposable=disposable,
                role_account=role,
                free_provider=free,
                gibberish=bool(local_code & _offline.GIBBERISH),
                typo_suggestion=suggestion,
            )
            assessment = self._assess(evidence)
            scored = (assessment.verdict, assessment.score, assessment.reasons)
            self._part_memo[code] = scored
        verdict, score, reasons = scored
        return _new_result(
            {
                "address": address,
                "normalized": f"{local}@{domain}",
                "local_part": local,
                "domain": domain,
                "verdict": verdict,
                "score": score,
                "reasons": reasons,
                "suggestion": suggestion,
                "error": None,
                "disposable": disposable,
                "role_account": role,
                "free_provider": free,
                "dns": None,
                "smtp": None,
            }
        )

    def _general_offline(self, address: str) -> RiskResult:
        """validate_offline through the parser for what the part caches do not take, cached.

        Such inputs (typos of syntax, quoted or IDN addresses) cost tens of microseconds each and
        recur in bulk lists (placeholders, the same bad row twice); results are immutable.
        """
        result = self._general.get(address)
        if result is None:
            if len(self._general) >= _GENERAL_CACHE_SIZE:
                self._general.clear()
            result = self._general[address] = self._parse_offline(address)
        return result

    def _parse_offline(self, address: str) -> RiskResult:
        """validate_offline through the parser, uncached."""
        try:
            text, simple = parse_fast(address)
            if simple is not None:
                return self._simple_offline(address, simple.local_part, simple.domain)
            parsed = parse_guarded(address, text)
        except AddressError as exc:
            return self.invalid_syntax(address, exc)
        return self.result(address, self.offline_evidence(parsed), parsed)

    async def validate(self, address: str) -> RiskResult:
        """Syntax, lists, typo and DNS (MX and their addresses, null MX, implicit MX); no SMTP."""
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            return self.invalid_syntax(address, exc)
        evidence = self.offline_evidence(parsed)
        dns: DnsFacts | None = None
        if self.check_dns:
            # The MX hosts' addresses too: MX records that lead nowhere are no route for mail.
            dns = await self.resolver.lookup_mx(parsed.ascii_domain, resolve_addresses=True)
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


# --- SMTP verification ---------------------------------------------------------------------------


def _rcpt_address(parsed: ParsedAddress) -> str:
    """The address as sent in RCPT (parse_address only returns addresses the session can send)."""
    return parsed.smtp_address


def _domain_results(
    validator: Validator,
    items: list[tuple[str, ParsedAddress]],
    dns: DnsFacts,
    facts: dict[str, SmtpFacts],
    blocked: SmtpFacts | None,
) -> list[RiskResult]:
    """Score each address with its domain's DNS facts and its own SMTP facts."""
    out = []
    for address, parsed in items:
        smtp = blocked if blocked is not None and dns.status == "ok" else None
        smtp = smtp or facts.get(_rcpt_address(parsed)) or SmtpFacts(checked=False)
        evidence = validator.offline_evidence(parsed).model_copy(update={"dns": dns, "smtp": smtp})
        out.append(validator.result(address, evidence, parsed))
    return out


async def verify(
    address: str, *, prober: Prober | None = None, validator: Validator | None = None
) -> RiskResult:
    """Validate one address and probe its mailbox over SMTP (greylisting -> ``unknown``).

    Without ``prober`` a default one is built from the environment (``EMAILINTEL_HELO``,
    ``EMAILINTEL_MAIL_FROM``), which raises ConfigError if they are missing or impersonating.
    """
    validator = validator or _default_validator()
    prober = prober or Prober()
    try:
        parsed = parse_address(address)
    except AddressError as exc:
        return validator.invalid_syntax(address, exc)
    items = [(address, parsed)]
    dns, facts = await probe_domain(
        parsed.ascii_domain, [_rcpt_address(parsed)], resolver=validator.resolver, prober=prober
    )
    return _domain_results(validator, items, dns, facts, None)[0]


def _done_addresses(checkpoint: Path) -> set[str]:
    done: set[str] = set()
    if not checkpoint.exists():
        return done
    with checkpoint.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line cut short by a crash (or mangled) is simply redone
            if isinstance(record, dict) and isinstance(record.get("address"), str):
                done.add(record["address"])
    return done


@dataclass(frozen=True, slots=True)
class RetryWait:
    """Greylisted addresses of one domain waiting for their next attempt.

    ``retry_at`` is the wall-clock time (``time.time()``) of that attempt; ``waiting`` 0 and
    ``retry_at`` None say the domain waits no more.
    """

    domain: str
    waiting: int
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class _Batch:
    """What every domain of one verify_many run shares."""

    validator: Validator
    prober: Prober
    sharing: SharedSessions
    gate: asyncio.Semaphore
    blocked: SmtpFacts | None
    schedule: tuple[float, ...]
    on_retry_wait: Callable[[RetryWait], None] | None

    async def verify_domain(
        self,
        domain: str,
        items: list[tuple[str, ParsedAddress]],
        emit: Callable[[list[RiskResult]], None],
    ) -> None:
        """Probe one domain's addresses and emit each result as soon as it is final."""
        # Domains on one MX address share its connections (SharedSessions bounds them).
        dns, facts = await probe_domain(
            domain,
            [_rcpt_address(parsed) for _, parsed in items],
            resolver=self.validator.resolver,
            prober=self.sharing,
            probe=self.blocked is None,
            lookup_gate=self.gate,
        )
        left = list(items)

        def final(addresses: list[str]) -> None:
            nonlocal left
            done = set(addresses)
            now = [item for item in left if _rcpt_address(item[1]) in done]
            left = [item for item in left if _rcpt_address(item[1]) not in done]
            if now:
                emit(_domain_results(self.validator, now, dns, facts, self.blocked))

        def wait(waiting: int, delay: float | None) -> None:
            retry_at = None if delay is None else time.time() + delay
            self._announce(RetryWait(domain, waiting, retry_at))

        async def again(addresses: list[str]) -> dict[str, SmtpFacts]:
            async with self.gate:  # greylisting waits without holding a slot, then asks again
                return await self.prober.probe(domain, addresses, dns)

        await retry_greylisted(facts, again, self.schedule, on_final=final, on_wait=wait)
        if left:  # addresses that were never probed (no route for mail, port 25 blocked)
            emit(_domain_results(self.validator, left, dns, facts, self.blocked))

    def _announce(self, wait: RetryWait) -> None:
        if self.on_retry_wait is not None:
            self.on_retry_wait(wait)


async def verify_many(
    addresses: Iterable[str],
    *,
    prober: Prober | None = None,
    validator: Validator | None = None,
    checkpoint: str | Path | None = None,
    concurrency: int = 16,
    retry_greylisted: bool = True,
    on_retry_wait: Callable[[RetryWait], None] | None = None,
) -> AsyncIterator[RiskResult]:
    """Verify many addresses, grouped by domain and by MX address so sessions carry many RCPTs.

    Domains whose first MX address is the same share its connections and fill each other's
    batches; another connection to an MX opens only while its queue holds more RCPTs than the open
    ones carry, up to the prober's per-host politeness limit (``concurrency`` in all). Each result is yielded as soon as it is
    final. With ``checkpoint`` (a JSONL file), addresses already recorded there are skipped and
    each new result is appended as it is yielded. Greylisted addresses are retried on the
    prober's schedule unless ``retry_greylisted`` is off; ``on_retry_wait`` hears when a
    domain's greylisted addresses start waiting (and when they stop). If the prober has a
    pre-flight target and it is unreachable, every result carries ``port25_blocked`` and no MX
    is contacted.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    validator = validator or _default_validator()
    prober = prober or Prober()
    path = Path(checkpoint) if checkpoint is not None else None
    done = _done_addresses(path) if path is not None else set()
    # backslashreplace: an address with a lone surrogate is recorded as a JSON \udcxx escape.
    sink = path.open("a", encoding="utf-8", errors="backslashreplace") if path else None

    def record(result: RiskResult) -> RiskResult:
        if sink is not None:
            sink.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
            sink.flush()
        return result

    try:
        groups: dict[str, list[tuple[str, ParsedAddress]]] = {}
        invalid: list[RiskResult] = []
        for address in addresses:
            if address in done:
                continue
            done.add(address)
            try:
                parsed = parse_address(address)
            except AddressError as exc:
                invalid.append(validator.invalid_syntax(address, exc))
                continue
            groups.setdefault(parsed.ascii_domain, []).append((address, parsed))
        for result in invalid:
            yield record(result)
        if not groups:
            return
        blocked: SmtpFacts | None = None
        target = prober.preflight_address()
        if target is not None:
            check = await check_port25(
                target[0],
                target[1],
                wait=prober.preflight_timeout,
                resolver=validator.resolver,
                proxy=prober.proxies.default,
            )
            blocked = None if check.ok else blocked_facts(check)
        gate = asyncio.Semaphore(concurrency)
        batch = _Batch(
            validator=validator,
            prober=prober,
            # Per MX address: as many connections as politeness allows, opened only while its
            # queue holds more RCPTs than the open ones carry (fewer, fuller connections win).
            sharing=SharedSessions(prober, total=concurrency),
            gate=gate,
            blocked=blocked,
            schedule=prober.retry_schedule if retry_greylisted else (),
            on_retry_wait=on_retry_wait,
        )
        # Each domain task puts its results here as they become final, then None when it ends.
        finals: asyncio.Queue[list[RiskResult] | Exception | None] = asyncio.Queue()

        async def run(domain: str, items: list[tuple[str, ParsedAddress]]) -> None:
            try:
                await batch.verify_domain(domain, items, finals.put_nowait)
            except Exception as exc:  # handed to the consumer, which raises it
                finals.put_nowait(exc)
            finally:
                finals.put_nowait(None)

        tasks = [asyncio.create_task(run(d, items)) for d, items in groups.items()]
        try:
            running = len(tasks)
            while running:
                item = await finals.get()
                if item is None:
                    running -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    for result in item:
                        yield record(result)
        finally:
            for task in tasks:
                task.cancel()
            batch.sharing.close()
    finally:
        if sink is not None:
            sink.close()
