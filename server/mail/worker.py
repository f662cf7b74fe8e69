"""The mail worker: slots that each claim a batch of due messages and hand them to the relay
over one reused SMTP connection, plus recovery of messages a dead worker left ``sending``.

Shaped like :class:`server.jobs.worker.Worker`: runs inside ``bavlio serve`` on the embedded
SQLite default, or as ``bavlio mail-worker`` processes on one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from server.background import BackgroundLoop
from server.mail.outbox import Claimed, Outbox, Outcome
from server.mail.outbox_rules import (
    AmbiguityPolicy,
    Event,
    RelayOutcome,
    TokenBucket,
    recovery_event,
    retry_delay,
)
from server.mail.ports import HandoffAnswer, HandoffProbe, SuppressionCheck, nothing_suppressed
from server.mail.relay import Opened, Relay, RelayResult

__all__ = ["MailWorker"]

log = logging.getLogger(__name__)

_UNKNOWN = (
    "handoff_unknown",
    "The worker stopped between handing the message to the relay and reading its reply; "
    "it may or may not have been delivered, so it was not sent again.",
)


class MailWorker(BackgroundLoop):
    """Sends queued messages until :meth:`stop`."""

    def __init__(
        self,
        outbox: Outbox,
        relay: Callable[[], Relay],
        *,
        suppression: SuppressionCheck = nothing_suppressed,
        probe: HandoffProbe | None = None,
        policy: AmbiguityPolicy = AmbiguityPolicy.FAIL,
        concurrency: int = 1,
        batch: int = 100,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        handoff_group: int = 1,
        rate_per_domain: float = 0.0,
        burst: float = 10.0,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1 or batch < 1 or lease_seconds <= 0 or poll_seconds <= 0:
            raise ValueError("concurrency, batch >= 1; lease and poll > 0")
        self.outbox = outbox
        self.relay = relay
        self.suppression = suppression
        self.probe = probe
        self.policy = policy
        self.concurrency = concurrency
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.handoff_group = max(1, handoff_group)
        """Messages handed off per commit: 1 keeps the ambiguity window at one message per
        connection; more trade a wider window (resolved by the probe, else by the policy)
        for fewer commits."""
        self.rate_per_domain = rate_per_domain
        self.burst = burst
        self.clock = clock
        self.worker_id = worker_id or (
            f"mail:{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._buckets: dict[str, TokenBucket] = {}
        self._commits = _GroupCommit(outbox, clock)
        self.group_commit = outbox.db.dialect == "sqlite"
        """One transaction for the hand-offs the connections ask for at the same moment: on
        SQLite (one writer) it saves the connections queueing for the write lock; PostgreSQL
        commits connections in parallel and groups their WAL flushes itself."""
        self.overlap = True
        """MAIL and RCPT of a group's first message while its hand-off commits."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def stop(self) -> None:
        """Stop claiming; the batch in hand finishes its current message, the rest goes back."""
        self._stopping.set()

    async def run(self) -> None:
        """Run the slots until :meth:`stop` (or cancellation)."""
        slots = [asyncio.create_task(self._slot(n)) for n in range(self.concurrency)]
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await asyncio.gather(*slots, return_exceptions=True)

    async def _slot(self, number: int) -> None:
        """One connection's loop. Each slot leases under its own id, and takes a new one after
        an error, so the message it may have left ``sending`` is recovered like a dead
        worker's (never while the slot that holds it is still sending it)."""
        relay = self.relay()
        generation = 0
        try:
            while not self._stopping.is_set():
                slot_id = f"{self.worker_id}/{number}.{generation}"
                try:
                    worked = await self.run_once(relay, slot_id)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database is away: log, wait, try again
                    log.exception("mail worker %s: a batch failed", slot_id)
                    generation += 1
                    await relay.close()
                    worked = 0
                if not worked:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
        finally:
            await relay.close()

    async def run_once(self, relay: Relay, slot_id: str | None = None) -> int:
        """Recover what dead workers left, then claim and send one batch; messages handled."""
        holder = slot_id or self.worker_id
        handled = await self.recover(holder)
        claimed = await self.outbox.claim(holder, self.clock(), self.lease_seconds, self.batch)
        return handled + await self._send_batch(relay, claimed, holder)

    async def recover(self, holder: str | None = None) -> int:
        """Settle ``sending`` messages whose worker died (see outbox_rules' recovery rule)."""
        holder = holder or self.worker_id
        found = await self.outbox.recover(holder, self.clock(), self.lease_seconds, self.batch)
        for msg in found:
            answer = await self._ask(msg.message_id)
            event = recovery_event(answer.accepted, self.policy)
            outcome = Outcome(
                msg.id,
                msg.attempt_token or "",
                event,
                queue_id=answer.queue_id,
                reply="recovered: the relay shows it queued" if answer.accepted else None,
                error=_UNKNOWN if event is Event.FAIL else None,
            )
            await self.outbox.finish(holder, self.clock(), outcome)
            log.warning("mail worker %s: recovered %s as %s", holder, msg.id, event)
        return len(found)

    async def _ask(self, message_id: str) -> HandoffAnswer:
        if self.probe is None:
            return HandoffAnswer(None)
        return await self.probe(message_id)

    async def _wait_for_rate(self, domain: str) -> bool:
        """Take a token of ``domain``'s bucket, waiting up to a lease third; False: give up."""
        if self.rate_per_domain <= 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(domain) or TokenBucket.full(
            self.rate_per_domain, self.burst, now
        )
        bucket, wait = bucket.take(now)
        self._buckets[domain] = bucket
        if wait == 0:
            return True
        if wait > self.lease_seconds / 3:
            return False
        await asyncio.sleep(wait)
        return await self._wait_for_rate(domain)

    async def _send_batch(self, relay: Relay, claimed: list[Claimed], holder: str) -> int:
        """Send ``claimed`` in groups of ``handoff_group``: one commit records the previous
        group's outcomes and hands the next group off; then each message goes to the relay."""
        pending: list[Outcome] = []
        handled = 0
        last_extend = self.clock()
        index = 0
        while index < len(claimed):
            if self._stopping.is_set():
                break
            if self.clock() - last_extend > self.lease_seconds / 3:
                await self.outbox.extend(
                    holder, [m.id for m in claimed[index:]], self.clock(), self.lease_seconds
                )
                last_extend = self.clock()
            group: list[tuple[Claimed, list[str], Mapping[str, str]]] = []
            limited = False
            while index < len(claimed) and len(group) < self.handoff_group:
                msg = claimed[index]
                if not await self._wait_for_rate(msg.domain):
                    limited = True
                    break
                index += 1
                suppressed = await self.suppression(msg.user_id, msg.recipients)
                recipients = [r for r in msg.recipients if r not in suppressed]
                if recipients:
                    group.append((msg, recipients, suppressed))
                    continue
                reasons = [{"address": a, "reason": r} for a, r in suppressed.items()]
                pending.append(
                    Outcome(
                        msg.id,
                        "",
                        Event.FAIL,
                        error=("all_recipients_suppressed", "Every recipient is suppressed."),
                        suppressed=reasons,
                    )
                )
                handled += 1
            # MAIL and RCPT of the group's first message run while the hand-off commits:
            # nothing can be queued before DATA, which waits for the commit, so the ambiguity
            # window stays what it was and the commit's latency hides behind two round trips.
            opening = (
                asyncio.ensure_future(relay.open(group[0][0].envelope_from, group[0][1]))
                if group and self.overlap
                else None
            )
            try:
                ids = [m.id for m, _, _ in group]
                tokens = await (
                    self._commits.advance(holder, pending, ids)
                    if self.group_commit
                    else self.outbox.advance_many(holder, self.clock(), pending, ids)
                )
            except BaseException as exc:
                if opening is not None:
                    await _abandon(relay, opening, cancel=isinstance(exc, asyncio.CancelledError))
                raise
            pending = []
            for msg, recipients, suppressed in group:
                opened: Opened | RelayResult | None = None
                if opening is not None:
                    opened, opening = await opening, None
                token = tokens.get(msg.id)
                if token is None:  # cancelled meanwhile, or the lease was lost
                    if isinstance(opened, Opened):
                        await relay.abandon(opened)
                    continue
                if opened is None:
                    opened = await relay.open(msg.envelope_from, recipients)
                result = (
                    opened if isinstance(opened, RelayResult) else await relay.data(opened, msg.raw)
                )
                outcome = await self._outcome(msg, token, result, suppressed)
                pending.append(outcome)
                handled += 1
                if outcome.event is Event.ACCEPTED:
                    self.sent += 1
            if limited:
                break  # over the send rate: the rest goes back
        await self.outbox.finish_many(holder, self.clock(), pending)
        if index < len(claimed):
            await self.outbox.release(holder, [m.id for m in claimed[index:]], self.clock())
        return handled

    async def _outcome(
        self, msg: Claimed, token: str, result: RelayResult, suppressed: Mapping[str, str]
    ) -> Outcome:
        reasons = [{"address": a, "reason": r} for a, r in suppressed.items()] or None
        refused = (
            "; ".join(f"{a}: {r}" for a, r in result.refused.items()) if result.refused else None
        )
        if result.outcome is RelayOutcome.ACCEPTED:
            error = ("recipients_refused", f"Refused by the relay: {refused}") if refused else None
            return Outcome(
                msg.id,
                token,
                Event.ACCEPTED,
                queue_id=result.queue_id,
                reply=f"{result.code} {result.reply}",
                error=error,
                suppressed=reasons,
            )
        if result.ambiguous:
            answer = await self._ask(msg.message_id)
            event = recovery_event(answer.accepted, self.policy)
            if event is Event.REQUEUE:
                event = Event.DEFER
            return Outcome(
                msg.id,
                token,
                event,
                queue_id=answer.queue_id,
                reply=result.reply,
                error=_UNKNOWN if event is Event.FAIL else None,
                retry_at=self.clock() + retry_delay(msg.attempts + 1),
            )
        if result.outcome is RelayOutcome.PERMANENT:
            return Outcome(
                msg.id,
                token,
                Event.FAIL,
                reply=f"{result.code} {result.reply}",
                error=("relay_rejected", f"The relay refused the message: {result.code}"),
                suppressed=reasons,
                refused=dict(result.refused) or None,
            )
        if msg.attempts + 1 >= self.max_attempts:
            return Outcome(
                msg.id,
                token,
                Event.FAIL,
                reply=result.reply,
                error=("too_many_attempts", f"Not accepted after {self.max_attempts} attempts."),
            )
        return Outcome(
            msg.id,
            token,
            Event.DEFER,
            reply=f"{result.code or ''} {result.reply}".strip(),
            retry_at=self.clock() + retry_delay(msg.attempts + 1),
        )


_Request = tuple[str, list[Outcome], list[str], "asyncio.Future[dict[str, str]]"]


class _GroupCommit:
    """Group commit of the worker's connections: the hand-offs (and outcomes) that connections
    ask for while a commit is running go together in the next transaction. Each connection
    still waits for its own hand-off to commit before its DATA, so no window widens; on SQLite
    (one writer) the connections stop queueing for the write lock one commit each."""

    def __init__(self, outbox: Outbox, clock: Callable[[], float]) -> None:
        self.outbox = outbox
        self.clock = clock
        self._waiting: list[_Request] = []
        self._task: asyncio.Task[None] | None = None

    async def advance(
        self, holder: str, done: Sequence[Outcome], hand_off: Sequence[str]
    ) -> dict[str, str]:
        """Record ``done`` and hand ``hand_off`` off for ``holder`` (Outbox.advance_many)."""
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((holder, list(done), list(hand_off), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[_Request] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self.outbox.advance_for(
                        self.clock(), [(h, d, o) for h, d, o, _ in batch]
                    )
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), tokens in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(tokens)
                batch = []
        finally:  # cancelled: nobody waits for ever
            stranded, self._waiting = [*batch, *self._waiting], []
            for *_, future in stranded:
                if not future.done():
                    future.cancel()


async def _abandon(
    relay: Relay, opening: asyncio.Future[Opened | RelayResult], *, cancel: bool
) -> None:
    """Undo an envelope opened for a hand-off that did not commit (its DATA never goes)."""
    if cancel:
        opening.cancel()
    with contextlib.suppress(BaseException):
        opened = await opening
        if isinstance(opened, Opened):
            await relay.abandon(opened)
