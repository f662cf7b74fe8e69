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
from collections.abc import Callable
from types import TracebackType

from server.mail.outbox import Claimed, Outbox, Outcome
from server.mail.outbox_rules import (
    AmbiguityPolicy,
    Event,
    RelayOutcome,
    TokenBucket,
    recovery_event,
    retry_delay,
)
from server.mail.ports import HandoffProbe, SuppressionCheck, nothing_suppressed
from server.mail.relay import Relay, RelayResult

__all__ = ["MailWorker"]

log = logging.getLogger(__name__)

_UNKNOWN = (
    "handoff_unknown",
    "The worker stopped between handing the message to the relay and reading its reply; "
    "it may or may not have been delivered, so it was not sent again.",
)


class MailWorker:
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
        self.rate_per_domain = rate_per_domain
        self.burst = burst
        self.clock = clock
        self.worker_id = worker_id or (
            f"mail:{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._buckets: dict[str, TokenBucket] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def stop(self) -> None:
        """Stop claiming; the batch in hand finishes its current message, the rest goes back."""
        self._stopping.set()

    async def run(self) -> None:
        """Run the slots until :meth:`stop` (or cancellation)."""
        slots = [asyncio.create_task(self._slot()) for _ in range(self.concurrency)]
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await asyncio.gather(*slots, return_exceptions=True)

    async def _slot(self) -> None:
        relay = self.relay()
        try:
            while not self._stopping.is_set():
                try:
                    worked = await self.run_once(relay)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database is away: log, wait, try again
                    log.exception("mail worker %s: a batch failed", self.worker_id)
                    worked = 0
                if not worked:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
        finally:
            await relay.close()

    async def run_once(self, relay: Relay) -> int:
        """Recover what dead workers left, then claim and send one batch; messages handled."""
        handled = await self.recover()
        claimed = await self.outbox.claim(
            self.worker_id, self.clock(), self.lease_seconds, self.batch
        )
        return handled + await self._send_batch(relay, claimed)

    async def recover(self) -> int:
        """Settle ``sending`` messages whose worker died (see outbox_rules' recovery rule)."""
        found = await self.outbox.recover(
            self.worker_id, self.clock(), self.lease_seconds, self.batch
        )
        for msg in found:
            accepted = await self.probe(msg.message_id) if self.probe is not None else None
            event = recovery_event(accepted, self.policy)
            outcome = Outcome(
                msg.id,
                msg.attempt_token or "",
                event,
                reply="recovered: the relay's log shows it queued" if accepted else None,
                error=_UNKNOWN if event is Event.FAIL else None,
            )
            await self.outbox.finish(self.worker_id, self.clock(), outcome)
            log.warning("mail worker %s: recovered %s as %s", self.worker_id, msg.id, event)
        return len(found)

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

    async def _send_batch(self, relay: Relay, claimed: list[Claimed]) -> int:
        pending: Outcome | None = None
        handled = 0
        last_extend = self.clock()
        for index, msg in enumerate(claimed):
            if self._stopping.is_set() or not await self._wait_for_rate(msg.domain):
                await self._flush(pending)
                pending = None
                await self.outbox.release(
                    self.worker_id, [m.id for m in claimed[index:]], self.clock()
                )
                break
            if self.clock() - last_extend > self.lease_seconds / 3:
                await self.outbox.extend(self.worker_id, self.clock(), self.lease_seconds)
                last_extend = self.clock()
            suppressed = await self.suppression(msg.user_id, msg.recipients)
            recipients = [r for r in msg.recipients if r not in suppressed]
            if not recipients:
                await self._flush(pending)
                pending = None
                reasons = [{"address": a, "reason": r} for a, r in suppressed.items()]
                await self.outbox.finish(
                    self.worker_id,
                    self.clock(),
                    Outcome(
                        msg.id,
                        "",
                        Event.FAIL,
                        error=("all_recipients_suppressed", "Every recipient is suppressed."),
                        suppressed=reasons,
                    ),
                )
                handled += 1
                continue
            token = await self.outbox.advance(self.worker_id, self.clock(), pending, msg.id)
            pending = None
            if token is None:  # cancelled meanwhile, or the lease was lost
                continue
            result = await relay.send(msg.envelope_from, recipients, msg.raw)
            pending = await self._outcome(msg, token, result, suppressed)
            handled += 1
            if pending.event is Event.ACCEPTED:
                self.sent += 1
        await self._flush(pending)
        return handled

    async def _flush(self, pending: Outcome | None) -> None:
        if pending is not None:
            await self.outbox.finish(self.worker_id, self.clock(), pending)

    async def _outcome(
        self, msg: Claimed, token: str, result: RelayResult, suppressed: object
    ) -> Outcome:
        reasons = (
            [{"address": a, "reason": r} for a, r in suppressed.items()]
            if isinstance(suppressed, dict) and suppressed
            else None
        )
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
            accepted = await self.probe(msg.message_id) if self.probe is not None else None
            event = recovery_event(accepted, self.policy)
            if event is Event.REQUEUE:
                event = Event.DEFER
            return Outcome(
                msg.id,
                token,
                event,
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

    async def __aenter__(self) -> MailWorker:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._task is not None:
            await self._task
