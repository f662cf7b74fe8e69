"""The credit ledger in the database: balances, holds and append-only entries.

Every change is one write transaction: a conditional UPDATE of the account row (``balance - held``
must cover a reservation; the CHECK constraint backs it), a conditional UPDATE of the hold
(``WHERE state = 'held'``, so it settles once) and an entry whose (user, kind, reference) is
unique, so a grant or charge books once however often it is retried. A synchronous call skips
the hold: :meth:`CreditStore.debit` takes the price by the same conditional UPDATE and books its
entry in one statement (PostgreSQL) or one ``BEGIN IMMEDIATE`` transaction (SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.billing.credit_rules import (
    EntryKind,
    HoldEvent,
    HoldState,
    effect,
    next_state,
    validate_amount,
)
from server.db.hotpg import OutcomeUnknown, end_lost, first_row
from server.db.models import CreditAccount, CreditEntry, CreditHold
from server.db.paging import newest_first
from server.db.rawsql import UNIQUE_VIOLATIONS, Busy, RawStatement, immediate, inline_sqlite
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HOLD_TTL",
    "Balance",
    "CreditStore",
    "DuplicateCharge",
    "Entry",
    "Hold",
    "InsufficientBalance",
    "UnknownAccount",
    "UnknownHold",
]

DEFAULT_HOLD_TTL = 24 * 3600.0
"""A hold nobody settles is released after this long (a crashed process charges nothing)."""


class InsufficientBalance(Exception):
    """The available balance (balance - held) does not cover the reservation."""

    def __init__(self, available: int, needed: int) -> None:
        super().__init__(f"{available} credits available, {needed} needed")
        self.available = available
        self.needed = needed


class DuplicateCharge(Exception):
    """A debit with a reference already booked (refused whole: nothing taken)."""


class UnknownAccount(Exception):
    """The user has no credit account."""


class UnknownHold(Exception):
    """No hold with that id belongs to that user."""


@dataclass(frozen=True)
class Balance:
    """An account's position."""

    balance: int
    held: int
    granted: int
    used: int

    @property
    def available(self) -> int:
        """What a new reservation may take."""
        return self.balance - self.held


@dataclass(frozen=True)
class Hold:
    """A reservation and where it stands."""

    id: str
    user_id: str
    amount: int
    captured: int
    state: HoldState
    operation: str
    reference: str


@dataclass(frozen=True)
class Entry:
    """One ledger line."""

    id: str
    kind: EntryKind
    amount: int
    operation: str | None
    reference: str
    balance_after: int
    created_at: float


async def _entry(
    conn: AsyncConnection,
    user_id: str,
    kind: EntryKind,
    amount: int,
    operation: str | None,
    reference: str,
    now: float,
) -> None:
    balance = (
        await conn.execute(select(CreditAccount.balance).where(CreditAccount.user_id == user_id))
    ).scalar_one()
    await conn.execute(
        insert(CreditEntry).values(
            id=new_id("txn", now=now),
            user_id=user_id,
            kind=kind.value,
            amount=amount,
            operation=operation,
            reference=reference,
            balance_after=balance,
            created_at=now,
        )
    )


_AVAILABLE = RawStatement("SELECT balance - held FROM credit_accounts WHERE user_id = ?")
_TAKE = RawStatement(
    "UPDATE credit_accounts SET balance = balance - ? WHERE user_id = ? AND balance - held >= ? "
    "RETURNING balance"
)
_BOOK_DEBIT = RawStatement(
    "INSERT INTO credit_entries "
    "(id, user_id, kind, amount, operation, reference, balance_after, created_at) "
    "VALUES (?, ?, 'debit', ?, ?, ?, ?, ?)"
)
# PostgreSQL: the conditional UPDATE and the ledger line in one statement (atomic on its own, so
# it runs in autocommit: one round trip). SQLite has no DML in WITH: _TAKE then _BOOK_DEBIT.
# ``set_config(..., true)`` turns synchronous_commit off for this statement's own transaction
# only (the CTE is joined so it is evaluated): the commit returns before its WAL flush, which was
# most of a debit's time (0.7 ms of 0.8 on the benchmark's disk). Atomicity, the balance check
# and the ledger's agreement with the balance are unchanged; a crash of the PostgreSQL server
# (not of this process) may forget the last fraction of a second of debits, the trade SQLite's
# synchronous=NORMAL makes too. Money coming in (grants, purchases) keeps synchronous commits.
_DEBIT_PG = RawStatement(
    "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true) AS setting), "
    "taken AS (UPDATE credit_accounts SET balance = balance - ? "
    "WHERE user_id = ? AND balance - held >= ? RETURNING balance) "
    "INSERT INTO credit_entries "
    "(id, user_id, kind, amount, operation, reference, balance_after, created_at) "
    "SELECT ?, ?, 'debit', ?, ?, ?, taken.balance, ? FROM taken, quick RETURNING balance_after"
)


_BOOKED = RawStatement("SELECT balance_after FROM credit_entries WHERE id = ?")


def _hold(row: object) -> Hold:
    return Hold(
        id=row.id,  # type: ignore[attr-defined]
        user_id=row.user_id,  # type: ignore[attr-defined]
        amount=row.amount,  # type: ignore[attr-defined]
        captured=row.captured,  # type: ignore[attr-defined]
        state=HoldState(row.state),  # type: ignore[attr-defined]
        operation=row.operation,  # type: ignore[attr-defined]
        reference=row.reference,  # type: ignore[attr-defined]
    )


class CreditStore:
    """Grants, purchases, reservations and their settlement for every user."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self, user_id: str, amount: int, *, kind: EntryKind, reference: str, operation: str | None
    ) -> bool:
        """Credit ``amount`` once per (user, kind, reference); False when already booked."""
        validate_amount(amount)
        if kind not in (EntryKind.GRANT, EntryKind.PURCHASE, EntryKind.REFUND):
            raise ValueError("add() books money in: grant, purchase or refund")
        now = time.time()
        try:
            async with write_transaction(self.engine) as conn:
                exists = (
                    await conn.execute(
                        select(CreditEntry.id).where(
                            CreditEntry.user_id == user_id,
                            CreditEntry.kind == kind.value,
                            CreditEntry.reference == reference,
                        )
                    )
                ).first()
                if exists is not None:
                    return False
                result = await conn.execute(
                    update(CreditAccount)
                    .where(CreditAccount.user_id == user_id)
                    .values(balance=CreditAccount.balance + amount)
                )
                if result.rowcount != 1:
                    raise UnknownAccount(user_id)
                await _entry(conn, user_id, kind, amount, operation, reference, now)
        except IntegrityError:  # the same reference booked concurrently
            return False
        return True

    async def reserve(
        self,
        user_id: str,
        amount: int,
        *,
        operation: str,
        reference: str | None = None,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Hold:
        """Hold ``amount`` credits; InsufficientBalance when ``balance - held`` is short.

        A second reserve with the same ``reference`` returns the first hold (idempotent).
        """
        validate_amount(amount)
        now = time.time()
        hold_id = new_id("hold", now=now)
        reference = reference or hold_id
        async with write_transaction(self.engine) as conn:
            existing = (
                await conn.execute(
                    select(CreditHold).where(
                        CreditHold.user_id == user_id, CreditHold.reference == reference
                    )
                )
            ).first()
            if existing is not None:
                return _hold(existing)
            result = await conn.execute(
                update(CreditAccount)
                .where(
                    CreditAccount.user_id == user_id,
                    CreditAccount.balance - CreditAccount.held >= amount,
                )
                .values(held=CreditAccount.held + amount)
            )
            if result.rowcount != 1:
                row = (
                    await conn.execute(
                        select(CreditAccount.balance, CreditAccount.held).where(
                            CreditAccount.user_id == user_id
                        )
                    )
                ).first()
                available = row.balance - row.held if row else 0
                raise InsufficientBalance(available, amount)
            await conn.execute(
                insert(CreditHold).values(
                    id=hold_id,
                    user_id=user_id,
                    amount=amount,
                    captured=0,
                    state=HoldState.HELD.value,
                    operation=operation,
                    reference=reference,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return Hold(hold_id, user_id, amount, 0, HoldState.HELD, operation, reference)

    async def available(self, user_id: str) -> int:
        """``balance - held`` now (0 without an account): a pre-check, not a promise."""
        row = await first_row(self.engine, _AVAILABLE, (user_id,), read_only=True)
        return int(row[0]) if row is not None else 0

    async def debit(
        self, user_id: str, amount: int, *, operation: str, reference: str | None = None
    ) -> int:
        """Charge ``amount`` at once, without a hold; the balance after. InsufficientBalance
        when ``balance - held`` is short, DuplicateCharge when ``reference`` was already debited
        (the unique ledger key: a charge books once); either way nothing is taken.

        One conditional UPDATE and the ledger line, atomically: one statement on PostgreSQL, one
        ``BEGIN IMMEDIATE`` transaction on SQLite, sent to the driver (server.db.rawsql).
        Cancelling the caller never leaves it half done: the inline SQLite path never yields and
        the pooled one is shielded (it books whole).
        """
        validate_amount(amount)
        now = time.time()
        entry_id = new_id("txn", now=now)
        reference = reference or entry_id
        take = (amount, user_id, amount)
        try:
            inline = inline_sqlite(self.engine)
            try:
                if inline is None:
                    raise Busy
                with inline.immediate() as conn:  # on this thread: microseconds, no hop
                    taken = conn.execute(_TAKE.sql, take).fetchall()  # done: COMMIT may follow
                    row = tuple(taken[0]) if taken else None
                    if row is not None:
                        book = (entry_id, user_id, -amount, operation, reference, row[0], now)
                        conn.execute(_BOOK_DEBIT.sql, book)
            except Busy:  # PostgreSQL, or another connection holds SQLite's write lock
                # shielded: a caller cancelled while this is in flight still books it whole (the
                # inline path above never yields, so nothing can cancel it half done)
                pooled = self._debit_pooled(user_id, amount, operation, reference, entry_id, now)
                row = await asyncio.shield(pooled)
        except UNIQUE_VIOLATIONS as exc:
            if "unique" not in str(exc).lower():
                raise
            raise DuplicateCharge(reference) from None
        if row is None:
            raise InsufficientBalance(await self.available(user_id), amount)
        return int(row[0])

    async def _debit_pooled(
        self, user_id: str, amount: int, operation: str, reference: str, entry_id: str, now: float
    ) -> tuple[Any, ...] | None:
        """:meth:`debit` on a pooled connection: the balance row after, None when short."""
        take = (amount, user_id, amount)
        if self.engine.dialect.name == "postgresql":
            params = (amount, user_id, amount, entry_id, user_id, -amount)
            try:
                return await first_row(self.engine, _DEBIT_PG, (*params, operation, reference, now))
            except OutcomeUnknown as lost:
                # the connection was lost with the outcome unknown: the line may have committed
                # before the answer was lost, or its server process may still be running it.
                # That process is ended first (its statement commits before, or never), then
                # the line is looked up. Booked: the work is paid, so it is delivered; not
                # booked: the caller answers 503 and releases nothing.
                if not await end_lost(self.engine, lost):
                    log.warning("a lost debit's server process may still run (%s)", entry_id)
                booked = await first_row(self.engine, _BOOKED, (entry_id,), read_only=True)
                if booked is None:
                    raise
                return booked
        async with self.engine.connect() as conn, immediate(conn) as aio:
            row = await _TAKE.first_on(aio, "sqlite", take)
            if row is not None:
                line = (entry_id, user_id, -amount, operation, reference)
                await _BOOK_DEBIT.first_on(aio, "sqlite", (*line, row[0], now))
            return row

    async def capture(self, user_id: str, hold_id: str, amount: int | None = None) -> bool:
        """Charge ``amount`` (default: all) of a hold and return the rest; False if settled."""
        return await self._settle(user_id, hold_id, HoldEvent.CAPTURE, amount)

    async def release(self, user_id: str, hold_id: str) -> bool:
        """Cancel a hold (nothing charged); False when it was already settled."""
        return await self._settle(user_id, hold_id, HoldEvent.RELEASE, None)

    async def _settle(
        self, user_id: str, hold_id: str, event: HoldEvent, amount: int | None
    ) -> bool:
        now = time.time()
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(CreditHold).where(
                        CreditHold.id == hold_id, CreditHold.user_id == user_id
                    )
                )
            ).first()
            if row is None:
                raise UnknownHold(hold_id)
            hold = _hold(row)
            if hold.state is not HoldState.HELD:
                return False
            target = next_state(hold.state, event)
            captured = hold.amount if amount is None else amount
            change = effect(event, hold.amount, captured if event is HoldEvent.CAPTURE else 0)
            result = await conn.execute(
                update(CreditHold)
                .where(CreditHold.id == hold_id, CreditHold.state == HoldState.HELD.value)
                .values(
                    state=target.value,
                    captured=captured if event is HoldEvent.CAPTURE else 0,
                    settled_at=now,
                )
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                update(CreditAccount)
                .where(CreditAccount.user_id == user_id)
                .values(
                    balance=CreditAccount.balance + change.balance_delta,
                    held=CreditAccount.held + change.held_delta,
                )
            )
            if event is HoldEvent.CAPTURE and captured > 0:
                await _entry(
                    conn, user_id, EntryKind.DEBIT, -captured, hold.operation, hold.id, now
                )
        return True

    async def expire(self, now: float | None = None) -> int:
        """Release every hold past its expiry; the number released."""
        now = time.time() if now is None else now
        async with read_connection(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(CreditHold.id, CreditHold.user_id).where(
                        CreditHold.state == HoldState.HELD.value, CreditHold.expires_at <= now
                    )
                )
            ).all()
        count = 0
        for row in rows:
            if await self._settle(row.user_id, row.id, HoldEvent.EXPIRE, None):
                count += 1
        return count

    async def hold(self, user_id: str, hold_id: str) -> Hold | None:
        """One of the user's holds."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(CreditHold).where(
                        CreditHold.id == hold_id, CreditHold.user_id == user_id
                    )
                )
            ).first()
        return _hold(row) if row else None

    async def balance(self, user_id: str) -> Balance:
        """Balance, held, total credited and total charged."""
        async with read_connection(self.engine) as conn:
            account = (
                await conn.execute(
                    select(CreditAccount.balance, CreditAccount.held).where(
                        CreditAccount.user_id == user_id
                    )
                )
            ).first()
            sums = (
                await conn.execute(
                    select(
                        func.coalesce(
                            func.sum(CreditEntry.amount).filter(CreditEntry.amount > 0), 0
                        ),
                        func.coalesce(
                            func.sum(CreditEntry.amount).filter(CreditEntry.amount < 0), 0
                        ),
                    ).where(CreditEntry.user_id == user_id)
                )
            ).one()
        if account is None:
            return Balance(0, 0, 0, 0)
        return Balance(account.balance, account.held, int(sums[0]), -int(sums[1]))

    async def entries(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        operation: str | None = None,
    ) -> list[Entry]:
        """Ledger lines newest first (``limit`` rows from ``offset`` or after id ``after``)."""
        query = select(CreditEntry).where(CreditEntry.user_id == user_id)
        if operation is not None:
            query = query.where(CreditEntry.operation == operation)
        query = newest_first(query, CreditEntry.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [
            Entry(
                id=row.id,
                kind=EntryKind(row.kind),
                amount=row.amount,
                operation=row.operation,
                reference=row.reference,
                balance_after=row.balance_after,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def spent_since(self, user_id: str, since: float) -> int:
        """Credits charged since ``since`` (usage reports)."""
        async with read_connection(self.engine) as conn:
            value = (
                await conn.execute(
                    select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                        CreditEntry.user_id == user_id,
                        CreditEntry.kind == EntryKind.DEBIT.value,
                        CreditEntry.created_at >= since,
                    )
                )
            ).scalar_one()
        return -int(value)
