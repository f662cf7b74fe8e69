"""The outbox store: every read and write of ``mail_messages``, on SQLite and PostgreSQL.

Each state change is one conditional UPDATE built from :mod:`server.mail.outbox_rules`: it
applies only in the states the event allows, only for the lease holder where the event needs the
lease, and only with the current attempt token once a message is handed off, so a worker whose
lease moved on can never record an outcome for someone else's attempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db.engine import Database
from server.db.models import MailMessage
from server.db.tx import write_transaction
from server.mail.outbox_rules import TERMINAL, DailyCaps, Event, State, effect, utc_day_start
from server.webhooks.mail_events import email_outcome_event

__all__ = ["Claimed", "MailRecord", "Outbox", "Outcome"]

messages: sa.Table = MailMessage.__table__  # type: ignore[assignment]
M = messages.c
_TERMINAL = [s.value for s in TERMINAL]


@dataclass(frozen=True, slots=True)
class MailRecord:
    """A message as the API shows it (never its raw bytes)."""

    id: str
    user_id: str
    state: State
    from_address: str
    domain: str
    recipients: list[str]
    headers_view: dict[str, Any]
    subject: str
    message_id: str
    size: int
    scheduled_at: float | None
    created_at: float
    updated_at: float
    handed_off_at: float | None
    finished_at: float | None
    attempts: int
    next_attempt_at: float
    relay_queue_id: str | None
    relay_reply: str | None
    error_code: str | None
    error_message: str | None
    suppressed: list[dict[str, str]] | None


_RECORD_FIELDS = tuple(f for f in MailRecord.__dataclass_fields__ if f != "state")
_RECORD_COLUMNS = [M.state, *(M[f] for f in _RECORD_FIELDS)]


def _record(row: Any) -> MailRecord:
    values = {name: row[name] for name in _RECORD_FIELDS}
    return MailRecord(state=State(row["state"]), **values)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker holds: what it needs to hand it to the relay."""

    id: str
    user_id: str
    domain: str
    from_address: str
    envelope_from: str
    recipients: tuple[str, ...]
    message_id: str
    raw: bytes
    attempts: int
    attempt_token: str | None  # set for a recovered (sending) message


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one hand-off: the event (ACCEPTED, DEFER or FAIL) and its details."""

    id: str
    token: str
    event: Event
    queue_id: str | None = None
    reply: str | None = None
    error: tuple[str, str] | None = None
    retry_at: float | None = None
    suppressed: list[dict[str, str]] | None = None
    refused: dict[str, str] | None = None
    """Recipients the relay refused at RCPT (address → its reply), on a FAIL: permanent."""


RefusalHook = Callable[[AsyncConnection, str, str, Mapping[str, str], float], Awaitable[None]]
"""Called on the outcome's transaction when a message fails because the relay permanently
refused its recipients: (connection, user id, email id, address → reply, now)."""


def _case(event: Event) -> tuple[list[str], sa.Case[Any]]:
    moves = effect(event)
    return [s.value for s in moves], sa.case(
        {s.value: t.value for s, t in moves.items()}, value=M.state
    )


async def _store_new(
    conn: AsyncConnection, row: Mapping[str, Any], links: Sequence[str], caps: DailyCaps
) -> None:
    """The new message row, its tracked links and (every recipient suppressed) its
    ``email.failed`` webhook event, on the caller's transaction; CapReached (nothing written)
    when a daily cap is reached, counted under the domain's lock so the cap is exact."""
    from server.mail.tracking_store import save_links

    if caps.per_domain or caps.per_alias:
        domain, alias = str(row["domain"]), str(row["from_address"])
        await lock_caps(conn, [domain_cap_key(domain)])
        since = utc_day_start(float(row["created_at"]))
        caps.check(*await _counts(conn, domain, alias, since))
    await conn.execute(sa.insert(messages).values(**row))
    await save_links(conn, str(row["id"]), links)
    await email_outcome_event(conn, row)


def domain_cap_key(domain: str) -> str:
    """The lock key of a sending domain's daily caps (its aliases are on it: one covers both)."""
    return f"mail-daily-cap:{domain}"


async def lock_caps(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Hold the daily-cap locks named by ``keys`` until the transaction ends (taken sorted, so
    two transactions locking several cannot deadlock). SQLite: the write transaction already
    serialises writers (BEGIN IMMEDIATE), so nothing to do."""
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        await conn.execute(_PG_CAP_LOCK, {"key": key})


_PG_CAP_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def _counts(
    conn: AsyncConnection, domain: str, from_address: str, since: float
) -> tuple[int, int]:
    """Messages created since ``since`` (not cancelled) from ``domain`` and ``from_address``."""
    live = M.state != State.CANCELLED.value
    by_domain = sa.select(sa.func.count()).where(M.domain == domain, M.created_at >= since, live)
    by_alias = sa.select(sa.func.count()).where(
        M.from_address == from_address, M.created_at >= since, live
    )
    d = (await conn.execute(by_domain)).scalar_one()
    a = (await conn.execute(by_alias)).scalar_one()
    return int(d), int(a)


class Outbox:
    """The outbox on one database (claims lock rows with SKIP LOCKED on PostgreSQL)."""

    def __init__(self, db: Database, on_refused: RefusalHook | None = None) -> None:
        self.db = db
        self.engine = db.engine
        self.skip_locked = db.dialect == "postgresql"
        self.on_refused = on_refused

    # --- owners ---------------------------------------------------------------------------

    async def insert(
        self,
        row: Mapping[str, Any],
        links: Sequence[str] = (),
        conn: AsyncConnection | None = None,
        caps: DailyCaps | None = None,
    ) -> MailRecord:
        """Store a new message (``queued``, or already ``failed`` when every recipient was
        suppressed) and its tracked links, together; inside the caller's transaction when
        ``conn`` is given (so a campaign's exactly-once claim commits with the message).
        CapReached, nothing written, when it would exceed one of ``caps``."""
        caps = caps if caps is not None else DailyCaps()
        if conn is not None:
            await _store_new(conn, row, links, caps)
        else:
            async with write_transaction(self.engine) as own:
                await _store_new(own, row, links, caps)
        return _record(row)

    async def get(self, user_id: str, email_id: str) -> MailRecord | None:
        """The owner's message, if it exists."""
        query = sa.select(*_RECORD_COLUMNS).where(M.id == email_id, M.user_id == user_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _record(row) if row is not None else None

    async def list_emails(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int = 0,
        before: str | None = None,
        state: State | None = None,
        tag: str | None = None,
    ) -> list[MailRecord]:
        """The owner's messages, newest first (``limit`` rows; ids below ``before``)."""
        query = sa.select(*_RECORD_COLUMNS).where(M.user_id == user_id)
        if state is not None:
            query = query.where(M.state == state.value)
        if tag is not None:
            query = query.where(M.tags_key.contains(f",{tag.lower()},", autoescape=True))
        if before is not None:
            query = query.where(M.id < before)
        query = query.order_by(M.id.desc()).limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(r) for r in rows]

    async def cancel(self, user_id: str, email_id: str, now: float) -> MailRecord | None:
        """Apply CANCEL (queued only, even while a worker holds its lease: the hand-off then
        does not apply); the message after, or None when it was not queued."""
        sources, target = _case(Event.CANCEL)
        stmt = (
            sa.update(messages)
            .where(M.id == email_id, M.user_id == user_id, M.state.in_(sources))
            .values(state=target, updated_at=now, finished_at=now, error_code="cancelled")
            .returning(*_RECORD_COLUMNS)
        )
        async with write_transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return _record(row) if row is not None else None

    async def counts_since(self, domain: str, from_address: str, since: float) -> tuple[int, int]:
        """Messages created since ``since`` (not cancelled) from ``domain`` and ``from_address``."""
        async with self.engine.connect() as conn:
            return await _counts(conn, domain, from_address, since)

    # --- workers --------------------------------------------------------------------------

    async def _lease(
        self,
        where: sa.ColumnElement[bool],
        target: sa.Case[Any],
        worker_id: str,
        expires: float,
        limit: int,
    ) -> list[Claimed]:
        """Move up to ``limit`` rows matching ``where`` (earliest due first) to their ``target``
        state under ``worker_id``'s lease until ``expires``; the claimed rows by id."""
        pick = sa.select(M.id).where(where).order_by(M.next_attempt_at, M.id).limit(limit)
        if self.skip_locked:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            sa.update(messages)
            .where(M.id.in_(pick.scalar_subquery()), where)
            .values(state=target, lease_owner=worker_id, lease_expires=expires)
            .returning(*_CLAIMED)
        )
        async with write_transaction(self.engine) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return sorted((_claimed(r) for r in rows), key=lambda c: c.id)

    @staticmethod
    def _claimable(now: float) -> sa.ColumnElement[bool]:
        return sa.and_(
            M.state == State.QUEUED.value,
            M.next_attempt_at <= now,
            sa.or_(M.lease_owner.is_(None), M.lease_expires < now),
        )

    async def claim(self, worker_id: str, now: float, lease: float, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due queued messages (oldest due first)."""
        sources, target = _case(Event.CLAIM)
        where = sa.and_(self._claimable(now), M.state.in_(sources))
        return await self._lease(where, target, worker_id, now + lease, limit)

    async def recover(self, worker_id: str, now: float, lease: float, limit: int) -> list[Claimed]:
        """Take over ``sending`` messages whose worker's lease expired (RECOVER)."""
        sources, target = _case(Event.RECOVER)
        # Never our own: this worker knows what it has in flight, even past a stalled lease.
        mine = sa.and_(M.lease_owner.is_not(None), M.lease_owner == worker_id)
        where = sa.and_(M.state.in_(sources), M.lease_expires < now, sa.not_(mine))
        return await self._lease(where, target, worker_id, now + lease, limit)

    async def extend(self, worker_id: str, ids: Sequence[str], now: float, lease: float) -> None:
        """Extend the leases ``worker_id`` holds on ``ids`` (its own batch only: touching a
        sibling's rows could deadlock against the sibling's own updates on PostgreSQL)."""
        if not ids:
            return
        active = [s.value for s in State if s not in TERMINAL]
        stmt = (
            sa.update(messages)
            .where(M.id.in_(sorted(ids)), M.lease_owner == worker_id, M.state.in_(active))
            .values(lease_expires=now + lease)
        )
        async with write_transaction(self.engine) as conn:
            await conn.execute(stmt)

    async def release(self, worker_id: str, ids: Sequence[str], now: float) -> None:
        """Give claimed (still queued) messages back at once."""
        if not ids:
            return
        sources, target = _case(Event.RELEASE)
        stmt = (
            sa.update(messages)
            .where(M.id.in_(list(ids)), M.lease_owner == worker_id, M.state.in_(sources))
            .values(state=target, lease_owner=None, lease_expires=None)
        )
        async with write_transaction(self.engine) as conn:
            await conn.execute(stmt)

    async def advance(
        self,
        worker_id: str,
        now: float,
        done: Outcome | None,
        hand_off: str | None,
    ) -> str | None:
        """One message: :meth:`advance_many` with at most one outcome and one hand-off."""
        tokens = await self.advance_many(
            worker_id, now, [done] if done else [], [hand_off] if hand_off else []
        )
        return tokens.get(hand_off) if hand_off else None

    async def advance_many(
        self,
        worker_id: str,
        now: float,
        done: Sequence[Outcome],
        hand_off: Sequence[str],
    ) -> dict[str, str]:
        """In one transaction: record ``done`` (the last hand-offs' outcomes) and mark the
        messages ``hand_off`` as ``sending``, each with a fresh attempt token.

        Returns ``{id: token}`` for the hand-offs that applied; one that did not (cancelled
        meanwhile, or the lease was lost) must not be sent. One commit per group of messages,
        and at most one group ``sending`` per worker connection at any moment.
        """
        (tokens,) = await self.advance_for(now, [(worker_id, done, hand_off)])
        return tokens

    async def advance_for(
        self, now: float, requests: Sequence[tuple[str, Sequence[Outcome], Sequence[str]]]
    ) -> list[dict[str, str]]:
        """:meth:`advance_many` for several lease holders (a worker's connections) in one
        transaction: a group commit, each request's tokens in order. Each holder's rows are
        guarded by its own lease exactly as alone."""
        results: list[dict[str, str]] = []
        async with write_transaction(self.engine) as conn:
            for worker_id, done, hand_off in requests:
                results.append(await self._advance(conn, worker_id, now, done, hand_off))
        return results

    async def _advance(
        self,
        conn: AsyncConnection,
        worker_id: str,
        now: float,
        done: Sequence[Outcome],
        hand_off: Sequence[str],
    ) -> dict[str, str]:
        tokens: dict[str, str] = {}
        sources, target = _case(Event.HAND_OFF)
        for outcome in done:
            await self._record_outcome(conn, worker_id, now, outcome)
        for email_id in hand_off:
            token = secrets.token_hex(8)
            stmt = (
                sa.update(messages)
                .where(M.id == email_id, M.lease_owner == worker_id, M.state.in_(sources))
                .values(
                    state=target,
                    attempt_token=token,
                    attempts=M.attempts + 1,
                    handed_off_at=now,
                    updated_at=now,
                )
            )
            if (await conn.execute(stmt)).rowcount == 1:
                tokens[email_id] = token
        return tokens

    async def finish_many(self, worker_id: str, now: float, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes in one transaction (the end of a batch)."""
        if outcomes:
            async with write_transaction(self.engine) as conn:
                for outcome in outcomes:
                    await self._record_outcome(conn, worker_id, now, outcome)

    async def finish(self, worker_id: str, now: float, outcome: Outcome) -> bool:
        """Record one outcome on its own (the last message of a batch, recovery)."""
        async with write_transaction(self.engine) as conn:
            return await self._record_outcome(conn, worker_id, now, outcome)

    async def _record_outcome(
        self, conn: AsyncConnection, worker_id: str, now: float, outcome: Outcome
    ) -> bool:
        sources, target = _case(outcome.event)
        values: dict[str, Any] = {"state": target, "updated_at": now}
        if outcome.event in (Event.ACCEPTED, Event.FAIL):
            values.update(finished_at=now, lease_owner=None, lease_expires=None)
        if outcome.event in (Event.DEFER, Event.REQUEUE):
            values.update(
                next_attempt_at=outcome.retry_at if outcome.retry_at is not None else now,
                lease_owner=None,
                lease_expires=None,
                attempt_token=None,
            )
        if outcome.queue_id is not None:
            values["relay_queue_id"] = outcome.queue_id
        if outcome.reply is not None:
            values["relay_reply"] = outcome.reply[:500]
        if outcome.error is not None:
            values.update(error_code=outcome.error[0], error_message=outcome.error[1][:500])
        if outcome.suppressed is not None:
            values["suppressed"] = outcome.suppressed
        token_guard = M.attempt_token == outcome.token if outcome.token else sa.true()
        stmt = (
            sa.update(messages)
            .where(
                M.id == outcome.id,
                M.lease_owner == worker_id,
                M.state.in_(sources),
                token_guard,
            )
            .values(**values)
            .returning(*_EVENT_COLUMNS)
        )
        row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            return False
        await email_outcome_event(conn, dict(row))  # sent / failed: in this same transaction
        if outcome.event is Event.FAIL and outcome.refused and self.on_refused is not None:
            await self.on_refused(conn, str(row["user_id"]), outcome.id, outcome.refused, now)
        return True

    async def count_by_state(self) -> dict[str, int]:
        """Messages per state (for tests, benchmarks and operators)."""
        query = sa.select(M.state, sa.func.count()).group_by(M.state)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(s): int(n) for s, n in rows}


_EVENT_COLUMNS = [
    M.id,
    M.user_id,
    M.state,
    M.message_id,
    M.from_address,
    M.recipients,
    M.subject,
    M.relay_queue_id,
    M.error_code,
    M.suppressed,
]
"""What an ``email.*`` event shows of a message (never its bytes)."""

_CLAIMED = [
    M.id,
    M.user_id,
    M.domain,
    M.from_address,
    M.envelope_from,
    M.recipients,
    M.message_id,
    M.raw,
    M.attempts,
    M.attempt_token,
]


def _claimed(row: Any) -> Claimed:
    return Claimed(
        id=row["id"],
        user_id=row["user_id"],
        domain=row["domain"],
        from_address=row["from_address"],
        envelope_from=row["envelope_from"],
        recipients=tuple(row["recipients"]),
        message_id=row["message_id"],
        raw=bytes(row["raw"]),
        attempts=row["attempts"],
        attempt_token=row["attempt_token"],
    )
