"""The SMTP prober: one session per (domain, MX host) carrying many RCPTs, politely.

``EHLO -> MAIL FROM -> RCPT real...`` and, only after a real recipient was accepted, a RCPT for a
realistic random address to detect catch-all (cached per domain and MX with a TTL). It reconnects
on ``452 too many recipients``, ``421`` and before Postfix's error limits, moves to the next MX on
connect failure or a 4xx banner, refuses private MX addresses (SSRF) and can route through SOCKS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cachetools import TTLCache

from emailintel.errors import ConfigError
from emailintel.models import DnsFacts, SmtpFacts, SmtpReply
from emailintel.smtp.greylist import retry_greylisted
from emailintel.smtp.guard import allow_private_from_env, dialable
from emailintel.smtp.identity import Identity, identity_from_env
from emailintel.smtp.politeness import Politeness, PolitenessConfig
from emailintel.smtp.providers import ProviderRule, default_providers, match_provider
from emailintel.smtp.proxies import ProxyConfig, SmtpProxyError, open_via_proxy
from emailintel.smtp.replies import ReplyClass, ReplyKind, classify_reply
from emailintel.smtp.session import (
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpSession,
    SmtpSessionError,
    SmtpTimeoutError,
    SmtpTLSError,
    StartTlsMode,
    Timeouts,
    encode_path,
)

__all__ = ["DEFAULT_RETRY_SCHEDULE", "Prober", "SharedSessions", "random_local_part"]

DEFAULT_RETRY_SCHEDULE: Final = (60.0, 300.0, 900.0)
_FREE_RSETS: Final = 4  # RSETs per connection that stay under a strict junk-command limit (5)

_FIRST: Final = (
    "jonas", "emma", "liam", "olivia", "noah", "sofia", "lucas", "mia", "elias", "hannah",
    "oscar", "clara", "felix", "nora", "adam", "lena", "david", "julia", "martin", "laura",
    "peter", "anna", "simon", "paula", "daniel", "maria", "thomas", "sarah", "victor", "ella",
)  # fmt: skip
_LAST: Final = (
    "whitfield", "hartley", "brennan", "castillo", "lindqvist", "moreau", "okafor", "petrov",
    "sandoval", "thornton", "vasquez", "weller", "ashby", "barlow", "calloway", "dunmore",
    "ellery", "fairbanks", "galloway", "holloway", "kessler", "langford", "merritt", "norwood",
    "prescott", "radcliffe", "stanton", "tillman", "underwood", "winslow",
)  # fmt: skip


def random_local_part(rng: random.Random | None = None) -> str:
    """A name-like local part nobody is likely to own (``jonas.whitfield7``), never hex noise."""
    rng = rng or random.SystemRandom()
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    sep = rng.choice((".", "", "_"))
    return f"{first}{sep}{last}{rng.randint(2, 98)}"


@dataclass
class _Target:
    """One dialable address of one MX host."""

    host: str
    ip: str


@dataclass
class _Conn:
    """What one connection has spent of the server's limits, across the domains it carries."""

    session: SmtpSession
    rejections: int = 0  # replies Postfix counts as errors (its soft/hard error limits)
    sent: int = 0  # RCPT commands on this connection
    rsets: int = 0  # RSETs (junk commands to Postfix)
    in_transaction: bool = False  # a MAIL FROM is open: a new one needs RSET first


@dataclass
class _Run:
    """Mutable state of one probe of one domain."""

    domain: str
    pending: list[str]
    stop_on_accept: bool
    results: dict[str, SmtpFacts] = field(default_factory=dict)
    reconnects: int = 0
    target_index: int = 0
    deadline_at: float | None = None  # loop time by which a shared-session run must finish

    @property
    def accepted_any(self) -> bool:
        return any(f.accepted for f in self.results.values())

    def done(self) -> bool:
        return not self.pending or (self.stop_on_accept and self.accepted_any)

    def fail_pending(self, facts: SmtpFacts) -> None:
        for address in self.pending:
            self.results[address] = facts
        self.pending.clear()


@dataclass
class _Job:
    """A domain's run waiting for (or riding on) a shared session, and who waits for it."""

    run: _Run
    targets: list[_Target]
    done: asyncio.Future[None]

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _sendable(addresses: Iterable[str]) -> list[str]:
    """The distinct addresses in order; AddressError (before any connection) for an unsendable one."""
    pending = list(dict.fromkeys(addresses))
    for address in pending:
        encode_path(address, "recipient")
    return pending


def _failure_facts(exc: BaseException, mx_host: str | None) -> SmtpFacts:
    """Facts for a session failure that left no reply to classify."""
    flag = "protocol_error"
    if isinstance(exc, SmtpProxyError):
        flag = "proxy_error"
    elif isinstance(exc, SmtpTimeoutError | TimeoutError):
        flag = "timed_out"
    elif isinstance(exc, SmtpTLSError):
        flag = "tls_error"
    elif isinstance(exc, SmtpConnectError):
        flag = "connect_failed"
    elif isinstance(exc, SmtpDisconnectedError):
        flag = "connect_failed" if exc.stage in ("connect", "banner") else "temp_failure"
    elif isinstance(exc, SmtpProtocolError):
        flag = "protocol_error"
    stage = exc.stage if isinstance(exc, SmtpSessionError) else "connect"
    reply = SmtpReply(stage=stage, code=None, message=str(exc))
    return SmtpFacts(checked=True, mx_host=mx_host, reply=reply, **{flag: True})


def facts_from_reply(
    reply: SmtpReply, klass: ReplyClass, *, mx_host: str | None, tls: bool | None
) -> SmtpFacts:
    """The mailbox facts one classified reply establishes."""
    kind = klass.kind
    values: dict[str, Any] = {"checked": True, "mx_host": mx_host, "reply": reply, "tls": tls}
    if kind is ReplyKind.ACCEPTED:
        values["accepted"] = True
    elif kind is ReplyKind.MAILBOX_NOT_FOUND:
        values.update(accepted=False, mailbox_not_found=True)
    elif kind is ReplyKind.MAILBOX_FULL:
        values.update(accepted=False, mailbox_full=True)
    elif kind is ReplyKind.MAILBOX_DISABLED:
        values.update(accepted=False, mailbox_disabled=True)
    elif kind is ReplyKind.BLOCKED:
        values["blocked"] = True
    elif kind is ReplyKind.GREYLISTED:
        values.update(greylisted=True, retry_after=klass.retry_after)
    elif kind in (ReplyKind.TEMP_FAILURE, ReplyKind.TOO_MANY_RECIPIENTS):
        values.update(temp_failure=True, retry_after=klass.retry_after)
    elif kind is ReplyKind.REJECTED:
        values["accepted"] = False
    else:
        values["protocol_error"] = True
    return SmtpFacts(**values)


class Prober:
    """Holds the probing configuration and per-run state (politeness, catch-all cache).

    The identity comes from ``identity`` or ``helo``/``mail_from`` (else ``$EMAILINTEL_HELO`` /
    ``$EMAILINTEL_MAIL_FROM``); private MX addresses are refused unless ``allow_private_mx``
    (else ``$EMAILINTEL_ALLOW_PRIVATE_MX``).
    """

    def __init__(
        self,
        *,
        identity: Identity | None = None,
        helo: str | None = None,
        mail_from: str | None = None,
        null_sender: bool = False,
        force: bool = False,
        timeouts: Timeouts | None = None,
        port: int = 25,
        starttls: StartTlsMode = "opportunistic",
        plain_fallback: bool = True,
        verify_certs: bool = False,
        politeness: Politeness | PolitenessConfig | None = None,
        proxies: ProxyConfig | None = None,
        allow_private_mx: bool | None = None,
        catch_all_ttl: float = 3600.0,
        catch_all_probes: int = 1,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        max_rejections_per_connection: int = 8,
        max_rcpt_per_connection: int = 50,
        max_reconnects: int = 3,
        address_deadline: float = 120.0,
        providers: Sequence[ProviderRule] | None = None,
        source_address: str | None = None,
        preflight_target: str | None = None,
        preflight_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.identity = identity or identity_from_env(
            helo, mail_from, null_sender=null_sender, force=force, env=env
        )
        self.timeouts = timeouts or Timeouts()
        if isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"port out of range: {port!r}")
        if starttls not in ("opportunistic", "required", "never"):
            raise ConfigError(f"starttls must be opportunistic, required or never: {starttls!r}")
        for name, value in (
            ("catch_all_ttl", catch_all_ttl),
            ("address_deadline", address_deadline),
            ("preflight_timeout", preflight_timeout),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        for name, count in (
            ("catch_all_probes", catch_all_probes),
            ("max_rejections_per_connection", max_rejections_per_connection),
            ("max_rcpt_per_connection", max_rcpt_per_connection),
        ):
            if count < 1:
                raise ConfigError(f"{name} must be at least 1, got {count!r}")
        if max_reconnects < 0:
            raise ConfigError(f"max_reconnects must be >= 0, got {max_reconnects!r}")
        if any(not delay > 0 for delay in retry_schedule):
            raise ConfigError(f"retry delays must be positive: {tuple(retry_schedule)!r}")
        self.port = port
        self.starttls: StartTlsMode = starttls
        self.plain_fallback = plain_fallback
        self.verify_certs = verify_certs
        if isinstance(politeness, Politeness):
            self.politeness = politeness
        else:
            self.politeness = Politeness(politeness)
        self.proxies = proxies or ProxyConfig()
        self.allow_private_mx = (
            allow_private_from_env(env) if allow_private_mx is None else allow_private_mx
        )
        self.catch_all_probes = catch_all_probes
        self.retry_schedule = tuple(float(d) for d in retry_schedule)
        self.max_rejections = max_rejections_per_connection
        self.max_rcpt = max_rcpt_per_connection
        self.max_reconnects = max_reconnects
        self.address_deadline = address_deadline
        self.providers = tuple(default_providers() if providers is None else providers)
        if source_address is not None:
            try:
                source_address = str(ipaddress.ip_address(source_address))
            except ValueError:
                raise ConfigError(
                    f"source address must be an IP address: {source_address!r}"
                ) from None
        self.source_address = source_address
        self.preflight_target = preflight_target
        self.preflight_timeout = preflight_timeout
        self._catch_all: TTLCache[tuple[str, str], bool] = TTLCache(
            maxsize=100_000, ttl=catch_all_ttl
        )
        self.sessions_opened = 0

    # --- public ----------------------------------------------------------------------------------

    def provider_of(self, mx_host: str) -> ProviderRule | None:
        """The provider rule matching an MX host name, if any."""
        return match_provider(mx_host, self.providers)

    def cached_catch_all(self, domain: str, mx_host: str) -> bool | None:
        """The cached catch-all verdict of a domain at one MX host (None: not known)."""
        return self._catch_all.get((domain.lower(), mx_host.lower()))

    async def probe(
        self,
        domain: str,
        addresses: Iterable[str],
        dns: DnsFacts,
        *,
        stop_on_accept: bool = False,
    ) -> dict[str, SmtpFacts]:
        """Probe ``addresses`` (all at ``domain``) over as few sessions as the servers allow.

        ``dns`` must come from ``lookup_mx(..., resolve_addresses=True)``. Addresses left
        unprobed (``stop_on_accept``) are missing from the answer. Raises ConfigError if the
        identity would impersonate this domain or its MX, and AddressError, before connecting,
        for an address no RCPT command may carry (use parse_address first).
        """
        pending = _sendable(addresses)
        run = _Run(domain=domain.lower(), pending=pending, stop_on_accept=stop_on_accept)
        if not pending:
            return {}
        if dns.status != "ok" or not dns.mx:
            run.fail_pending(SmtpFacts(checked=False))
            return run.results
        self.identity.check(targets=[domain, *(mx.host for mx in dns.mx)])
        targets, private = self._targets(dns)
        if not targets:
            facts = SmtpFacts(
                checked=False,
                mx_host=dns.mx[0].host,
                mx_private_address=True if private else None,
                connect_failed=None if private else True,
            )
            run.fail_pending(facts)
            return run.results
        deadline = self.address_deadline + self.timeouts.command * (len(pending) - 1)
        try:
            async with asyncio.timeout(deadline):
                await self._run(run, targets)
        except TimeoutError:
            host = targets[min(run.target_index, len(targets) - 1)].host
            late = TimeoutError(f"overall deadline of {deadline:g} s exceeded")
            run.fail_pending(_failure_facts(late, host))
        self._annotate(run)
        return run.results

    async def probe_with_retries(
        self, domain: str, addresses: Iterable[str], dns: DnsFacts
    ) -> dict[str, SmtpFacts]:
        """:meth:`probe`, then re-probe greylisted addresses at the server's hint or the schedule."""
        results = await self.probe(domain, addresses, dns)

        async def again(greylisted: list[str]) -> dict[str, SmtpFacts]:
            return await self.probe(domain, greylisted, dns)

        return await retry_greylisted(results, again, self.retry_schedule)

    def share_key(self, dns: DnsFacts) -> tuple[str, str] | None:
        """The (MX host, address) a domain's probe starts at, for sharing sessions (None: none)."""
        if dns.status != "ok" or not dns.mx:
            return None
        targets, _ = self._targets(dns)
        return (targets[0].host.lower(), targets[0].ip) if targets else None

    async def probe_many(
        self,
        jobs: Iterable[tuple[str, Iterable[str], DnsFacts]],
        *,
        sessions: int = 1,
    ) -> dict[str, dict[str, SmtpFacts]]:
        """Probe several domains, sharing sessions among domains whose first MX is the same.

        Each ``(domain, addresses, dns)`` is answered as :meth:`probe` would; domains on one MX
        address follow each other on a connection (RSET, MAIL FROM, their RCPTs), with at most
        ``sessions`` connections per MX address. Catch-all verdicts stay per (domain, MX host).
        """
        sharing = SharedSessions(self, per_mx=sessions)
        listed = [(domain, list(addresses), dns) for domain, addresses, dns in jobs]
        try:
            found = await asyncio.gather(*(sharing.probe(*job) for job in listed))
        finally:
            sharing.close()
        return {job[0]: facts for job, facts in zip(listed, found, strict=True)}

    # --- internals -------------------------------------------------------------------------------

    def _deadline(self, run: _Run) -> float:
        return self.address_deadline + self.timeouts.command * (len(run.pending) - 1)

    async def _run_with_deadline(self, run: _Run, targets: list[_Target]) -> None:
        """The per-domain path (:meth:`probe` minus its checks) for a run sharing gave up on."""
        loop = asyncio.get_running_loop()
        if run.deadline_at is None:
            run.deadline_at = loop.time() + self._deadline(run)
        try:
            async with asyncio.timeout_at(run.deadline_at):
                await self._run(run, targets)
        except TimeoutError:
            host = targets[min(run.target_index, len(targets) - 1)].host
            run.fail_pending(_failure_facts(TimeoutError("overall deadline exceeded"), host))

    async def _shared_worker(self, queue: deque[_Job]) -> None:
        """Carry queued domains over shared connections until the queue is empty."""
        current: _Job | None = None
        while True:
            if current is None:
                current = self._next(queue)
                if current is None:
                    return
            job = current
            try:
                current = await self._shared_session(job, queue)
            except Exception as exc:  # handed to the caller waiting for this domain
                job.fail(exc)
                current = None

    async def _shared_session(self, job: _Job, queue: deque[_Job]) -> _Job | None:
        """One shared connection from ``job`` on; returns the domain to go on with (None: next)."""
        target = job.targets[0]
        rule = self.provider_of(target.host)
        alone = False
        async with self.politeness.session(
            target.host,
            provider=rule.name if rule else None,
            provider_per_minute=rule.per_minute if rule else 30.0,
            provider_connections=rule.max_connections if rule else None,
        ):
            try:
                session = await self._open(target, rule)
            except SmtpSessionError:
                alone = True  # the per-domain path retries and tries the next MX
            else:
                try:
                    if session.refusal is not None:
                        alone = True
                    else:
                        return await self._carry(job, queue, _Conn(session), target, rule)
                finally:
                    await session.close()
        if alone:
            await self._run_with_deadline(job.run, job.targets)
            job.finish()
        return None

    def _next(self, queue: deque[_Job]) -> _Job | None:
        """Take the next queued domain and start its deadline (None: the queue is empty)."""
        if not queue:
            return None
        job = queue.popleft()
        job.run.deadline_at = asyncio.get_running_loop().time() + self._deadline(job.run)
        return job

    async def _carry(
        self,
        job: _Job,
        queue: deque[_Job],
        conn: _Conn,
        target: _Target,
        rule: ProviderRule | None,
    ) -> _Job | None:
        """Probe domains one after another on one connection; returns the one still unfinished."""
        item: _Job | None = job
        while item is not None:
            run = item.run
            before = (len(run.pending), run.reconnects, conn.sent)
            try:
                assert run.deadline_at is not None
                async with asyncio.timeout_at(run.deadline_at):
                    failure = await self._converse(run, conn, target, rule)
            except TimeoutError:
                late = TimeoutError(f"overall deadline exceeded at {target.host}")
                run.fail_pending(_failure_facts(late, target.host))
                item.finish()
                return self._next(queue)
            except SmtpSessionError as exc:
                failure = self._after_error(run, exc, target)
                if failure is None:
                    return item  # reconnect and go on with this domain
            except Exception as exc:
                item.fail(exc)  # the caller of this domain hears of it; the session is dropped
                raise
            if failure is not None:
                run.fail_pending(failure)
            if not run.done():
                if (len(run.pending), run.reconnects) == before[:2] and before[2] == 0:
                    run.reconnects += 1  # a fresh connection that made no progress
                if run.reconnects <= self.max_reconnects:
                    return item
                run.fail_pending(
                    SmtpFacts(checked=True, mx_host=target.host, temp_failure=True, reply=None)
                )
            item.finish()
            if not conn.session.connected or conn.session.refusal is not None:
                return self._next(queue)
            item = self._next(queue)
        return None

    def _targets(self, dns: DnsFacts) -> tuple[list[_Target], bool]:
        targets: list[_Target] = []
        private = False
        for mx in dns.mx:
            allowed = dialable(mx.addresses, allow_private=self.allow_private_mx)
            private = private or len(allowed) < len(mx.addresses)
            targets += [_Target(mx.host, ip) for ip in allowed]
        return targets, private

    async def _run(self, run: _Run, targets: list[_Target]) -> None:
        while not run.done():
            before = (len(run.pending), run.reconnects)
            session_failure = await self._one_session(run, targets)
            if session_failure is not None:
                run.fail_pending(session_failure)
                return
            if (len(run.pending), run.reconnects) == before:
                run.reconnects += 1  # a session that made no progress counts as a reconnect
            if run.reconnects > self.max_reconnects and not run.done():
                host = targets[run.target_index].host
                run.fail_pending(
                    SmtpFacts(checked=True, mx_host=host, temp_failure=True, reply=None)
                )

    async def _one_session(self, run: _Run, targets: list[_Target]) -> SmtpFacts | None:
        """Run one session from the current target on; facts returned mean give up on the rest."""
        failure: SmtpFacts | None = None
        for index in range(run.target_index, len(targets)):
            target = targets[index]
            rule = self.provider_of(target.host)
            async with self.politeness.session(
                target.host,
                provider=rule.name if rule else None,
                provider_per_minute=rule.per_minute if rule else 30.0,
                provider_connections=rule.max_connections if rule else None,
            ):
                try:
                    session = await self._open(target, rule)
                except (SmtpConnectError, SmtpTimeoutError, SmtpProxyError, SmtpTLSError) as exc:
                    failure = _failure_facts(exc, target.host)
                    if isinstance(exc, SmtpProxyError | SmtpTLSError):
                        return failure
                    continue
                except SmtpSessionError as exc:
                    failure = _failure_facts(exc, target.host)
                    continue
                try:
                    banner = session.refusal
                    if banner is not None and banner.stage == "banner":
                        klass = classify_reply(banner)
                        failure = facts_from_reply(
                            banner, klass, mx_host=target.host, tls=session.tls
                        )
                        if banner.code is None or banner.code < 500:
                            continue  # 4xx banner: the next MX may take us
                        return failure
                    run.target_index = index
                    return await self._converse(run, _Conn(session), target, rule)
                except SmtpSessionError as exc:
                    return self._after_error(run, exc, target)
                finally:
                    await session.close()
        return failure

    def _after_error(self, run: _Run, exc: SmtpSessionError, target: _Target) -> SmtpFacts | None:
        if isinstance(exc, SmtpDisconnectedError) and run.reconnects < self.max_reconnects:
            run.reconnects += 1
            return None
        return _failure_facts(exc, target.host)

    async def _open(self, target: _Target, rule: ProviderRule | None) -> SmtpSession:
        try:
            return await self._open_mode(target, rule, self.starttls)
        except SmtpTLSError:
            if not (self.plain_fallback and self.starttls == "opportunistic"):
                raise
        return await self._open_mode(target, rule, "never")

    async def _open_mode(
        self, target: _Target, rule: ProviderRule | None, mode: StartTlsMode
    ) -> SmtpSession:
        sock = None
        proxy = self.proxies.for_provider(rule.name if rule else None)
        if proxy is not None:
            sock = await open_via_proxy(
                proxy, target.ip, self.port, connect_timeout=self.timeouts.connect
            )
        session = SmtpSession(
            target.ip,
            port=self.port,
            server_hostname=target.host,
            helo=self.identity.helo,
            timeouts=self.timeouts,
            starttls=mode,
            verify_certs=self.verify_certs,
            source_address=None if sock is not None else self.source_address,
            sock=sock,
        )
        self.sessions_opened += 1
        await session.open()
        return session

    async def _converse(
        self, run: _Run, conn: _Conn, target: _Target, rule: ProviderRule | None
    ) -> SmtpFacts | None:
        """MAIL FROM, then RCPTs (pipelined when offered) until done or a reconnect is due."""
        session = conn.session
        if session.refusal is not None:  # EHLO/HELO or STARTTLS refused
            return self._refused(run, session.refusal, session, target)
        utf8 = any(not address.isascii() for address in run.pending)
        limit = min(self.max_rcpt, rule.max_rcpt_per_session if rule else self.max_rcpt)
        tx_sent = 0
        pipelining = session.pipelining
        opened = False
        while not run.done():
            # The budget also bounds a pipelined batch, so it cannot cross the error limit.
            room = min(self.max_rejections - conn.rejections, limit - conn.sent)
            if room <= 0:
                return None  # reconnect before the server's error or recipient limits bite
            # stop_on_accept asks one at a time: nothing may be sent after the first acceptance.
            batch = run.pending[: room if pipelining and not run.stop_on_accept else 1]
            for _ in batch:
                await self.politeness.rcpt(target.host)
            if opened:
                replies = await session.rcpt_many(batch)
            else:
                setup, replies = await self._open_transaction(conn, batch, utf8)
                refused = [r for r in setup if r.code is None or r.code >= 400]
                if refused:
                    return self._refused(run, refused[0], session, target)
                opened = True
            for address, reply in zip(batch, replies, strict=False):
                conn.sent += 1
                tx_sent += 1
                klass = classify_reply(reply)
                if klass.backoff:
                    self.politeness.backoff(target.host)
                reconnect = klass.kind is ReplyKind.TOO_MANY_RECIPIENTS or reply.code == 421
                if reconnect and (tx_sent > 1 or reply.code == 421):
                    if reply.code == 421 or not session.connected:
                        run.reconnects += 1
                    if run.reconnects <= self.max_reconnects:
                        return None
                facts = facts_from_reply(reply, klass, mx_host=target.host, tls=session.tls)
                timings = {**session.timings_ms, "rcpt": reply.elapsed_ms or 0.0}
                facts = facts.model_copy(update={"timings_ms": timings})
                run.results[address] = facts
                run.pending.pop(0)
                if klass.kind is ReplyKind.BLOCKED:
                    run.fail_pending(facts)  # the server refuses us, not this mailbox: stop asking
                    break
                if not facts.accepted:
                    conn.rejections += 1
                    if reply.code is not None and 400 <= reply.code < 500:
                        pipelining = False  # a temporary refusal: go on one at a time
                if facts.mailbox_not_found and (run.domain, target.host) not in self._catch_all:
                    self._catch_all[(run.domain, target.host)] = False
            if len(replies) < len(batch) and not session.connected:
                raise SmtpDisconnectedError("rcpt", "closed during a pipelined batch")
        accepted = any(f.accepted and f.mx_host == target.host for f in run.results.values())
        if accepted and session.connected:
            await self._catch_all_probe(run, conn, target, rule)
        return None

    async def _open_transaction(
        self, conn: _Conn, addresses: Sequence[str], utf8: bool = False
    ) -> tuple[list[SmtpReply], list[SmtpReply]]:
        """MAIL FROM (after RSET on a used connection) and the first RCPTs, pipelined if offered.

        Raises SmtpDisconnectedError if the server closed before answering RSET/MAIL.
        """
        reset = conn.in_transaction
        if reset:
            conn.rsets += 1
            if conn.rsets > _FREE_RSETS:
                conn.rejections += 1  # past Postfix's junk limit an RSET costs an error
        conn.in_transaction = True
        setup, replies = await conn.session.transaction(
            self.identity.mail_from, addresses, reset=reset, smtputf8=utf8
        )
        if not all(r.code is not None and r.code < 400 for r in setup):
            conn.rejections += sum(1 for r in (*setup, *replies) if r.code is None or r.code >= 400)
            conn.sent += len(replies)
        elif len(setup) < 1 + reset:
            raise SmtpDisconnectedError("mail", "closed before answering MAIL FROM")
        return setup, replies

    def _refused(
        self, run: _Run, reply: SmtpReply, session: SmtpSession, target: _Target
    ) -> SmtpFacts | None:
        klass = classify_reply(reply)
        if reply.code == 421 and run.reconnects < self.max_reconnects:
            self.politeness.backoff(target.host)
            run.reconnects += 1
            return None
        return facts_from_reply(reply, klass, mx_host=target.host, tls=session.tls)

    async def _catch_all_probe(
        self, run: _Run, conn: _Conn, target: _Target, rule: ProviderRule | None
    ) -> None:
        key = (run.domain, target.host)
        if key in self._catch_all or (rule is not None and rule.skip_catch_all_probe):
            return
        with contextlib.suppress(SmtpSessionError):
            probes = [f"{random_local_part()}@{run.domain}" for _ in range(self.catch_all_probes)]
            for _ in probes:
                await self.politeness.rcpt(target.host)
            setup, replies = await self._open_transaction(conn, probes)
            if not all(r.code is not None and r.code < 400 for r in setup):
                return
            verdicts: list[bool | None] = []
            for reply in replies:
                conn.sent += 1
                kind = classify_reply(reply).kind
                if kind is not ReplyKind.ACCEPTED:
                    conn.rejections += 1
                verdicts.append(
                    True
                    if kind is ReplyKind.ACCEPTED
                    else False
                    if kind is ReplyKind.MAILBOX_NOT_FOUND
                    else None
                )
            if True in verdicts:
                self._catch_all[key] = True
            elif verdicts and all(v is False for v in verdicts):
                self._catch_all[key] = False

    def _annotate(self, run: _Run) -> None:
        """Add catch-all and provider facts to every answer, per the MX host that gave it."""
        for address, facts in run.results.items():
            if facts.mx_host is None:
                continue
            rule = self.provider_of(facts.mx_host)
            update: dict[str, Any] = {"provider": rule.name if rule else None}
            if facts.accepted:
                update["catch_all"] = self.cached_catch_all(run.domain, facts.mx_host)
                if rule is not None and rule.accepts_all:
                    update["provider_accepts_all"] = True
            run.results[address] = facts.model_copy(update=update)

    def preflight_address(self) -> tuple[str, int] | None:
        """The configured pre-flight target as (host, port), or None when none is set."""
        if self.preflight_target is None:
            return None
        host, sep, port = self.preflight_target.rpartition(":")
        if not sep or host.endswith(":") or (host.startswith("[") and not host.endswith("]")):
            return self.preflight_target.strip("[]"), self.port
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"bad pre-flight target {self.preflight_target!r}") from None
        return host.strip("[]"), number


class SharedSessions:
    """Per-domain probes carried over connections shared by all domains on one MX address.

    ``await shared.probe(domain, addresses, dns)`` answers as :meth:`Prober.probe` does; domains
    submitted while others on the same MX address are being probed join their connections. At
    most ``per_mx`` connections per MX address and ``total`` in all; :meth:`close` stops the
    workers.
    """

    def __init__(self, prober: Prober, *, per_mx: int = 1, total: int = 256) -> None:
        if per_mx < 1 or total < 1:
            raise ConfigError(f"session limits must be at least 1, got {per_mx!r}, {total!r}")
        self.prober = prober
        self.per_mx = per_mx
        self._slots = asyncio.Semaphore(total)
        self._queues: dict[tuple[str, str], deque[_Job]] = {}
        self._workers: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def probe(
        self,
        domain: str,
        addresses: Iterable[str],
        dns: DnsFacts,
        *,
        stop_on_accept: bool = False,
    ) -> dict[str, SmtpFacts]:
        """Probe one domain's addresses, sharing connections with its MX's other domains."""
        prober = self.prober
        pending = _sendable(addresses)
        key = prober.share_key(dns) if pending and not stop_on_accept else None
        if key is None:
            return await prober.probe(domain, pending, dns, stop_on_accept=stop_on_accept)
        prober.identity.check(targets=[domain, *(mx.host for mx in dns.mx)])
        targets, _ = prober._targets(dns)
        run = _Run(domain=domain.lower(), pending=pending, stop_on_accept=False)
        job = _Job(run, targets, asyncio.get_running_loop().create_future())
        queue = self._queues.setdefault(key, deque())
        queue.append(job)
        if self._workers.get(key, 0) < self.per_mx:
            self._workers[key] = self._workers.get(key, 0) + 1
            task = asyncio.create_task(self._work(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await job.done
        prober._annotate(run)
        return run.results

    async def _work(self, key: tuple[str, str], queue: deque[_Job]) -> None:
        try:
            async with self._slots:
                await self.prober._shared_worker(queue)
        finally:
            self._workers[key] -= 1

    def close(self) -> None:
        """Cancel the workers (domains still queued are left unanswered)."""
        for task in list(self._tasks):
            task.cancel()
