"""The one probing engine: domains queue per MX address and share its connections.

A *lane* is one MX address with the domains (jobs) waiting for it. Its connections take RCPTs
from the queue in order, across domains: a batch left short by one domain is filled from the
next, in the same MAIL transaction, so round trips carry full batches. Another connection opens
only while the queue holds more RCPTs than the open ones carry. Per-domain probing is a lane of
one domain. Every decision (batch size, reconnects, catch-all, what a reply means) is asked of
:mod:`emailintel.smtp.plan`; this module only does the I/O and the bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emailintel.models import DnsFacts, SmtpFacts, SmtpReply
from emailintel.smtp import plan
from emailintel.smtp.guard import dialable
from emailintel.smtp.providers import ProviderRule
from emailintel.smtp.proxies import SmtpProxyError
from emailintel.smtp.replies import ReplyKind, classify_reply
from emailintel.smtp.session import (
    SmtpDisconnectedError,
    SmtpSession,
    SmtpSessionError,
    encode_path,
)

if TYPE_CHECKING:
    from emailintel.smtp.prober import Prober

__all__ = ["Engine", "sendable"]

_LINGER = 1.0  # seconds an idle shared connection waits for more domains before closing


@dataclass(frozen=True, slots=True)
class Target:
    """One dialable address of one MX host."""

    host: str
    ip: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.host.lower(), self.ip)


def sendable(addresses: Iterable[str]) -> list[str]:
    """The distinct addresses in order; AddressError (before any connection) for an unsendable one."""
    pending = list(dict.fromkeys(addresses))
    for address in pending:
        encode_path(address, "recipient")
    return pending


def targets_of(dns: DnsFacts, *, allow_private: bool) -> tuple[list[Target], bool]:
    """The dialable MX addresses in preference order, and whether a private one was refused."""
    targets: list[Target] = []
    private = False
    for mx in dns.mx:
        allowed = dialable(mx.addresses, allow_private=allow_private)
        private = private or len(allowed) < len(mx.addresses)
        targets += [Target(mx.host, ip) for ip in allowed]
    return targets, private


@dataclass(eq=False)
class Job:
    """One domain's probe: addresses to send, in flight, answered; its reconnects and deadline."""

    domain: str
    targets: list[Target]
    todo: deque[str]
    stop_on_accept: bool
    count: int
    done: asyncio.Future[None]
    results: dict[str, SmtpFacts] = field(default_factory=dict)
    flying: set[str] = field(default_factory=set)
    target_index: int = 0
    reconnects: int = 0
    deadline_at: float | None = None
    failure: SmtpFacts | None = None
    probes: deque[str] = field(default_factory=deque)  # catch-all addresses not yet sent
    probes_flying: int = 0
    probe_kinds: list[ReplyKind | None] = field(default_factory=list)
    probed_at: set[str] = field(default_factory=set)  # MX hosts whose catch-all probe started

    @property
    def target(self) -> Target:
        return self.targets[self.target_index]

    def accepted_at(self, host: str) -> bool:
        return any(f.accepted and f.mx_host == host for f in self.results.values())

    def real_done(self) -> bool:
        return not self.todo and not self.flying

    def finished(self) -> bool:
        return self.real_done() and not self.probes and self.probes_flying == 0

    def takeable(self) -> bool:
        if self.done.done():
            return False
        if self.stop_on_accept and (self.flying or self.probes_flying):
            return False  # nothing may follow an acceptance still unread
        return bool(self.todo or self.probes)

    def fail(self, facts: SmtpFacts) -> None:
        """Answer every address not answered yet with ``facts``; late replies are ignored."""
        self.failure = self.failure or facts
        for address in (*self.todo, *sorted(self.flying)):
            self.results.setdefault(address, facts)
        self.todo.clear()
        self.flying.clear()
        self.probes.clear()

    def give_back(self, address: str) -> None:
        """An in-flight address went unanswered: it goes first again."""
        if address in self.flying:
            self.flying.discard(address)
            self.todo.appendleft(address)


@dataclass(frozen=True, slots=True)
class _Item:
    """One RCPT of a batch: whose, which address, and whether it is a catch-all probe."""

    job: Job
    address: str
    probe: bool = False


@dataclass(eq=False)
class Lane:
    """One MX address, the domains queued for it, and its open connections."""

    target: Target
    rule: ProviderRule | None
    jobs: deque[Job] = field(default_factory=deque)
    workers: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a domain joined the queue
    cap: int | None = None  # connections the server took at most (it refused one more)
    round_trip: float | None = None  # the shortest reply time seen here (seconds)
    sent: int = 0  # RCPTs answered here, and how many of them were refused
    rejected: int = 0

    def pending(self) -> int:
        return sum(len(job.todo) + len(job.probes) for job in self.jobs if job.takeable())

    def lead(self) -> Job | None:
        return next((job for job in self.jobs if job.takeable()), None)

    def remove(self, job: Job) -> None:
        with contextlib.suppress(ValueError):
            self.jobs.remove(job)


@dataclass(eq=False)
class _Conn:
    """One connection's spending of the server's limits and its transaction state."""

    session: SmtpSession
    rejections: int = 0
    sent: int = 0
    rsets: int = 0
    in_transaction: bool = False  # a MAIL FROM was sent: a new one needs RSET first
    open_tx: bool = False  # the current MAIL FROM was accepted: RCPTs may follow
    utf8: bool = False
    tx_sent: int = 0
    pipelining: bool = True
    batch: list[_Item] = field(default_factory=list)  # sent, replies not yet applied


class Engine:
    """Probes domains over per-MX lanes; ``per_mx`` connections per MX address (None: as many as
    politeness allows), ``total`` in all."""

    def __init__(
        self,
        prober: Prober,
        *,
        per_mx: int | None,
        total: int,
        parallel_from: float = plan.PARALLEL_FROM,
    ) -> None:
        self.prober = prober
        self.per_mx = per_mx
        self.parallel_from = parallel_from
        self._slots = asyncio.Semaphore(total)
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._waiting = 0  # connections waiting for one of the ``total`` slots

    # --- submitting ------------------------------------------------------------------------------

    async def probe(
        self, domain: str, addresses: Iterable[str], dns: DnsFacts, *, stop_on_accept: bool
    ) -> dict[str, SmtpFacts]:
        """Probe one domain's addresses; answers as :meth:`Prober.probe` documents."""
        prober = self.prober
        pending = sendable(addresses)
        if not pending:
            return {}
        if dns.status != "ok" or not dns.mx:
            return dict.fromkeys(pending, SmtpFacts(checked=False))
        prober.identity.check(targets=[domain, *(mx.host for mx in dns.mx)])
        targets, private = targets_of(dns, allow_private=prober.allow_private_mx)
        if not targets:
            facts = SmtpFacts(
                checked=False,
                mx_host=dns.mx[0].host,
                mx_private_address=True if private else None,
                connect_failed=None if private else True,
            )
            return dict.fromkeys(pending, facts)
        loop = asyncio.get_running_loop()
        job = Job(
            domain=domain.lower(),
            targets=targets,
            todo=deque(pending),
            stop_on_accept=stop_on_accept,
            count=len(pending),
            done=loop.create_future(),
        )
        self._submit(job)
        await job.done
        return prober.annotate(job.domain, job.results)

    def close(self) -> None:
        """Cancel the connections (domains still queued are left unanswered)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()

    def _lane(self, target: Target) -> Lane:
        lane = self._lanes.get(target.key)
        if lane is None:
            lane = self._lanes[target.key] = Lane(target, self.prober.provider_of(target.host))
        return lane

    def _submit(self, job: Job) -> None:
        lane = self._lane(job.target)
        lane.jobs.append(job)
        lane.arrived.set()
        self._spawn(lane)

    def _limit(self, lane: Lane) -> int:
        """Connections this lane may hold: politeness, the provider's rule, the caller's cap."""
        limit = self.prober.politeness.config.connections_per_host
        if lane.rule is not None and lane.rule.max_connections is not None:
            limit = min(limit, lane.rule.max_connections)
        if self.per_mx is not None:
            limit = min(limit, self.per_mx)
        if lane.cap is not None:
            limit = min(limit, lane.cap)
        return max(1, limit)

    def _spawn(self, lane: Lane) -> None:
        more = self._wanted(lane, lane.workers)
        if lane.workers == 0 and lane.lead() is not None:
            more = max(more, 1)
        for _ in range(more):
            lane.workers += 1
            task = asyncio.create_task(self._worker(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _worker(self, lane: Lane) -> None:
        try:
            self._waiting += 1
            if self._slots.locked():
                for other in self._lanes.values():
                    other.arrived.set()  # idle connections lingering elsewhere make room
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                first = True
                while (lead := lane.lead()) is not None:
                    if not first and lane.workers > 1 and not self._wanted(lane, lane.workers - 1):
                        return  # the other open connections carry what is left
                    first = False
                    try:
                        await self._connection(lane, lead)
                    except Exception as exc:  # unexpected: the domain it worked for hears of it
                        self._crash(lead, exc)
            finally:
                self._slots.release()
        finally:
            lane.workers -= 1
            if not self._closed and lane.workers == 0 and lane.lead() is not None:
                self._spawn(lane)

    def _wanted(self, lane: Lane, open_: int) -> int:
        limits = self.prober.limits(lane.rule)
        carry = plan.connection_carry(limits, rejected=lane.rejected, sent=lane.sent)
        return plan.connections_wanted(
            lane.pending(),
            open_,
            carry,
            self._limit(lane),
            round_trip=lane.round_trip,
            parallel_from=self.parallel_from,
        )

    def _crash(self, job: Job, exc: BaseException) -> None:
        if not job.done.done():
            job.done.set_exception(exc)
        for lane in self._lanes.values():
            lane.remove(job)

    # --- job state -------------------------------------------------------------------------------

    def _clock(self, job: Job) -> float:
        """The job's deadline, started the first time a connection works for it."""
        if job.deadline_at is None:
            prober = self.prober
            seconds = plan.deadline(prober.address_deadline, prober.timeouts.command, job.count)
            job.deadline_at = asyncio.get_running_loop().time() + seconds
        return job.deadline_at

    def _late(self, job: Job, host: str) -> None:
        seconds = plan.deadline(
            self.prober.address_deadline, self.prober.timeouts.command, job.count
        )
        late = TimeoutError(f"overall deadline of {seconds:g} s exceeded at {host}")
        job.fail(plan.failure_facts(late, host))

    def _settle(self, lane: Lane, job: Job) -> None:
        """Start the catch-all probe when it is due; finish the job when nothing is left."""
        prober, host = self.prober, lane.target.host
        if job.failure is None and plan.catch_all_due(
            cached=prober.cached_catch_all(job.domain, host),
            skip=lane.rule is not None and lane.rule.skip_catch_all_probe,
            accepted_here=job.accepted_at(host),
            real_done=job.real_done(),
            probed=host in job.probed_at,
        ):
            job.probed_at.add(host)
            job.probe_kinds.clear()
            job.probes.extend(prober.catch_all_addresses(job.domain))
        if job.probed_at and not job.probes and job.probes_flying == 0 and job.probe_kinds:
            verdict = plan.catch_all_verdict(job.probe_kinds)
            if verdict is not None:
                prober.remember_catch_all(job.domain, host, verdict)
            job.probe_kinds.clear()
        if job.failure is not None or job.finished():
            lane.remove(job)
            if not job.done.done():
                job.done.set_result(None)

    def _move_on(self, lane: Lane, job: Job, facts: SmtpFacts) -> None:
        """The job's MX address would not take us: queue it at the next one, or give up."""
        lane.remove(job)
        if job.target_index + 1 < len(job.targets):
            job.target_index += 1
            self._submit(job)
        else:
            job.fail(facts)
            self._settle(lane, job)

    def _reconnect_or_fail(self, lane: Lane, job: Job, facts: SmtpFacts) -> None:
        """A disconnect: the job may reconnect while it has reconnects left."""
        if job.reconnects < self.prober.max_reconnects:
            job.reconnects += 1
        else:
            job.fail(facts)

    # --- one connection --------------------------------------------------------------------------

    async def _connection(self, lane: Lane, lead: Job) -> None:
        """Open one connection for the lane (on behalf of ``lead``) and carry batches over it."""
        prober, target = self.prober, lane.target
        reconnects_before = lead.reconnects
        answered_before = len(lead.results)
        rule = lane.rule
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout_at(self._clock(lead)):
                    await stack.enter_async_context(
                        prober.politeness.session(
                            target.host,
                            provider=rule.name if rule else None,
                            provider_per_minute=rule.per_minute if rule else 30.0,
                            provider_connections=rule.max_connections if rule else None,
                        )
                    )
                    session = await prober.open_session(target.host, target.ip, rule)
            except TimeoutError:
                self._late(lead, target.host)
                self._settle(lane, lead)
                return
            except (SmtpSessionError, SmtpProxyError) as exc:
                facts = plan.failure_facts(exc, target.host)
                step = plan.on_open_failure(exc, others_open=lane.workers - 1)
                if step == "fewer":
                    self._fewer(lane)
                elif step == "next_mx":
                    self._move_on(lane, lead, facts)
                else:
                    lead.fail(facts)
                    self._settle(lane, lead)
                return
            stack.push_async_callback(session.close)
            if session.refusal is not None:
                self._refused(lane, [lead], session.refusal, session)
                return
            ehlo = session.timings_ms.get("ehlo")
            if ehlo:  # one EHLO is one round trip (two of them with STARTTLS)
                self._round_trip(lane, ehlo / 1000.0 / (2 if session.tls else 1))
            conn = _Conn(session, pipelining=session.pipelining)
            try:
                await self._carry(lane, conn)
            finally:
                for item in conn.batch:  # left by an unexpected error or a cancellation
                    self._unanswered(item)
                for job in dict.fromkeys(item.job for item in conn.batch):
                    self._settle(lane, job)
                progressed = len(lead.results) > answered_before
                grew = lead.reconnects > reconnects_before
                if not lead.done.done() and plan.stalled(
                    answered=int(progressed), reconnects_grew=grew
                ):
                    lead.reconnects += 1
                for job in list(lane.jobs):
                    if job.reconnects > prober.max_reconnects and not job.done.done():
                        job.fail(plan.gave_up(target.host))
                        self._settle(lane, job)

    def _fewer(self, lane: Lane) -> None:
        """The MX refused one more connection while others are open: hold no more than those."""
        others = lane.workers - 1
        lane.cap = max(1, others if lane.cap is None else min(lane.cap, others))

    def _refused(
        self, lane: Lane, jobs: Iterable[Job], reply: SmtpReply, session: SmtpSession
    ) -> None:
        """The server refused the session or our MAIL FROM: reconnect, next MX, or give up."""
        prober, host = self.prober, lane.target.host
        facts = plan.facts_from_reply(reply, classify_reply(reply), mx_host=host, tls=session.tls)
        for job in dict.fromkeys(jobs):
            step = plan.on_refusal(
                reply,
                reconnects=job.reconnects,
                max_reconnects=prober.max_reconnects,
                others_open=lane.workers - 1,
            )
            if step == "fewer":
                self._fewer(lane)
                return
            if step == "reconnect":
                prober.politeness.backoff(host)
                job.reconnects += 1
                for address in list(job.flying):
                    job.give_back(address)
            elif step == "next_mx":
                self._move_on(lane, job, facts)
                continue
            else:
                job.fail(facts)
            self._settle(lane, job)

    def _take(self, lane: Lane, conn: _Conn, size: int) -> list[_Item]:
        """Up to ``size`` RCPTs from the lane's queue, in order, across its domains."""
        batch: list[_Item] = []
        now = asyncio.get_running_loop().time()
        for job in list(lane.jobs):
            if len(batch) >= size:
                break
            if not job.takeable():
                continue
            if now >= self._clock(job):
                self._late(job, lane.target.host)
                self._settle(lane, job)
                continue
            while len(batch) < size and job.takeable():
                probe = not job.todo
                address = job.probes[0] if probe else job.todo[0]
                if conn.open_tx and not conn.utf8 and not address.isascii():
                    return batch  # needs SMTPUTF8: the next transaction carries it
                if probe:
                    job.probes.popleft()
                    job.probes_flying += 1
                else:
                    job.todo.popleft()
                    job.flying.add(address)
                batch.append(_Item(job, address, probe))
                if job.stop_on_accept:
                    break  # one at a time: nothing may be sent after an acceptance
        return batch

    async def _carry(self, lane: Lane, conn: _Conn) -> None:
        """Batches of RCPTs over one connection until the queue is empty or a reconnect is due."""
        prober = self.prober
        limits = prober.limits(lane.rule)
        session = conn.session
        while session.connected and session.refusal is None:
            size = plan.batch_size(
                limits,
                rejections=conn.rejections,
                sent=conn.sent,
                pipelining=conn.pipelining,
                one_at_a_time=False,
            )
            if size == 0:
                return  # reconnect before the server's error or recipient limits bite
            full = min(limits.max_rejections, limits.max_rcpt) if conn.pipelining else 1
            if not plan.worth_a_batch(
                size,
                full=full,
                handshake=plan.handshake_round_trips(session.tls),
                pending=lane.pending(),
            ):
                return  # a fresh connection carries the rest in fuller batches
            batch = self._take(lane, conn, size)
            if not batch:
                lead = lane.lead()
                if lead is None:
                    if not await self._linger(lane, session):
                        return
                    continue
                following = lead.todo[0] if lead.todo else lead.probes[0]
                if conn.open_tx and not conn.utf8 and not following.isascii():
                    conn.open_tx = False  # the next address needs an SMTPUTF8 transaction
                continue
            if not await self._send(lane, conn, batch):
                return

    async def _linger(self, lane: Lane, session: SmtpSession) -> bool:
        """Keep an idle connection a moment for domains still on their way (their DNS lookups
        finish one by one), unless another MX waits for a slot; False: close it."""
        if self._waiting:
            return False
        lane.arrived.clear()
        if lane.lead() is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LINGER):
                    await lane.arrived.wait()
        if self._waiting or lane.lead() is None:
            return False
        return session.connected and session.refusal is None

    async def _send(self, lane: Lane, conn: _Conn, batch: list[_Item]) -> bool:
        """Send one batch and read its replies; False: this connection is done."""
        prober, host, session = self.prober, lane.target.host, conn.session
        jobs = list(dict.fromkeys(item.job for item in batch))
        addresses = [item.address for item in batch]
        conn.batch = batch
        setup: list[SmtpReply] = []
        try:
            async with asyncio.timeout_at(min(self._clock(job) for job in jobs)):
                for _ in batch:
                    await prober.politeness.rcpt(host)
                if conn.open_tx:
                    replies = await session.rcpt_many(addresses)
                else:
                    reset = conn.in_transaction
                    if reset:
                        if plan.rset_costs_error(conn.rsets):
                            conn.rejections += 1
                        conn.rsets += 1
                    conn.in_transaction = True
                    conn.utf8 = any(not address.isascii() for address in addresses)
                    conn.tx_sent = 0
                    setup, replies = await session.transaction(
                        prober.identity.mail_from, addresses, reset=reset, smtputf8=conn.utf8
                    )
                    if len(setup) < 1 + reset and all(_ok(r) for r in setup):
                        raise SmtpDisconnectedError("mail", "closed before answering MAIL FROM")
        except TimeoutError:
            conn.batch = []
            loop_now = asyncio.get_running_loop().time()
            for item in batch:
                self._unanswered(item)
            for job in jobs:
                if loop_now >= self._clock(job):
                    self._late(job, host)
                self._settle(lane, job)
            return False
        except SmtpSessionError as exc:
            conn.batch = []
            facts = plan.failure_facts(exc, host)
            for item in batch:
                self._unanswered(item)
            for job in jobs:
                if isinstance(exc, SmtpDisconnectedError):
                    self._reconnect_or_fail(lane, job, facts)
                else:
                    job.fail(facts)
                self._settle(lane, job)
            return False
        conn.batch = []
        if setup and not all(_ok(r) for r in setup):
            refused = next(r for r in setup if not _ok(r))
            conn.rejections += sum(1 for r in (*setup, *replies) if not _ok(r))
            conn.sent += len(replies)
            for item in batch:
                self._unanswered(item)
            self._refused(lane, jobs, refused, session)
            return session.connected and session.refusal is None
        conn.open_tx = True
        first = (setup or replies)[:1]
        if first and first[0].elapsed_ms is not None:
            self._round_trip(lane, first[0].elapsed_ms / 1000.0)
        return self._read(lane, conn, batch, replies)

    def _round_trip(self, lane: Lane, seconds: float) -> None:
        """Note a round trip to the lane's MX; the first one may make more connections pay."""
        measured = lane.round_trip is None
        lane.round_trip = seconds if lane.round_trip is None else min(lane.round_trip, seconds)
        if measured:
            self._spawn(lane)

    def _unanswered(self, item: _Item) -> None:
        if item.probe:
            item.job.probes_flying -= 1
            item.job.probe_kinds.append(None)  # a probe cut off: inconclusive
        else:
            item.job.give_back(item.address)

    def _read(self, lane: Lane, conn: _Conn, batch: list[_Item], replies: list[SmtpReply]) -> bool:
        """Apply a batch's replies; False: this connection is done."""
        prober, host, session = self.prober, lane.target.host, conn.session
        keep = True
        for index, (item, reply) in enumerate(zip(batch, replies, strict=False)):
            job = item.job
            conn.sent += 1
            conn.tx_sent += 1
            lane.sent += 1
            if item.probe:
                kind = classify_reply(reply).kind
                job.probes_flying -= 1
                job.probe_kinds.append(kind)
                if kind is not ReplyKind.ACCEPTED:
                    conn.rejections += 1
                    lane.rejected += 1
                continue
            if item.address not in job.flying:
                continue  # its domain already has its answer (blocked, failed)
            step = plan.read_rcpt_reply(
                reply,
                mx_host=host,
                tls=session.tls,
                tx_sent=conn.tx_sent,
                connected=session.connected,
                reconnects=job.reconnects,
                max_reconnects=prober.max_reconnects,
            )
            if step.backoff:
                prober.politeness.backoff(host)
            if step.count_reconnect:
                job.reconnects += 1
            if step.facts is None:
                for rest in batch[index:]:
                    self._unanswered(rest)
                keep = False
                break
            timings = {**session.timings_ms, "rcpt": reply.elapsed_ms or 0.0}
            job.flying.discard(item.address)
            job.results[item.address] = step.facts.model_copy(update={"timings_ms": timings})
            if step.rejection:
                conn.rejections += 1
                lane.rejected += 1
            if step.one_at_a_time:
                conn.pipelining = False
            if step.not_catch_all:
                prober.remember_catch_all(job.domain, host, False, only_if_unknown=True)
            if step.stop_domain:
                job.fail(step.facts)  # the server refuses us, not this mailbox: stop asking
            elif job.stop_on_accept and step.facts.accepted:
                job.todo.clear()
        else:
            if len(replies) < len(batch):
                lost = SmtpDisconnectedError("rcpt", "closed during a pipelined batch")
                facts = plan.failure_facts(lost, host)
                cut = batch[len(replies) :]
                for item in cut:
                    self._unanswered(item)
                for job in dict.fromkeys(item.job for item in cut if not item.probe):
                    self._reconnect_or_fail(lane, job, facts)
                keep = False
        for job in dict.fromkeys(item.job for item in batch):
            self._settle(lane, job)
        return keep and session.connected


def _ok(reply: SmtpReply) -> bool:
    return reply.code is not None and reply.code < 400
