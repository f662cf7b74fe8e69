"""The credit ledger on SQLite and PostgreSQL: holds settle once, balances never go negative."""

from __future__ import annotations

import asyncio

import pytest

from server.auth.store import AccountStore
from server.billing.credit_rules import EntryKind, HoldState
from server.billing.credits import (
    CreditStore,
    InsufficientBalance,
    UnknownAccount,
    UnknownHold,
)
from server.db.engine import Database


async def _user(db: Database, subject: str = "sub") -> str:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        subject, email=None, plan="paid"
    )
    return user.id


async def test_grants_book_once_per_reference(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    booked = await asyncio.gather(
        *(
            credits.add(user, 10, kind=EntryKind.GRANT, reference="g1", operation="grant")
            for _ in range(5)
        )
    )
    assert booked.count(True) == 1
    assert (await credits.balance(user)).balance == 10
    assert await credits.add(user, 5, kind=EntryKind.PURCHASE, reference="g1", operation=None)
    assert (await credits.balance(user)).balance == 15
    with pytest.raises(UnknownAccount):
        await credits.add("usr_none", 5, kind=EntryKind.GRANT, reference="x", operation=None)
    with pytest.raises(ValueError, match="money in"):
        await credits.add(user, 5, kind=EntryKind.DEBIT, reference="y", operation=None)


async def test_reserve_capture_release(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 10, kind=EntryKind.GRANT, reference="g", operation=None)
    one = await credits.reserve(user, 3, operation="email.find")
    two = await credits.reserve(user, 3, operation="email.find")
    position = await credits.balance(user)
    assert (position.balance, position.held, position.available) == (10, 6, 4)
    with pytest.raises(InsufficientBalance) as info:
        await credits.reserve(user, 5, operation="email.find")
    assert (info.value.available, info.value.needed) == (4, 5)
    assert await credits.capture(user, one.id)
    assert not await credits.capture(user, one.id)  # once
    assert not await credits.release(user, one.id)
    assert await credits.release(user, two.id)
    position = await credits.balance(user)
    assert (position.balance, position.held, position.used, position.granted) == (7, 0, 3, 10)
    entries = await credits.entries(user, limit=10)
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [
        (EntryKind.DEBIT, -3, 7),
        (EntryKind.GRANT, 10, 10),
    ]
    assert (await credits.hold(user, two.id)).state is HoldState.RELEASED  # type: ignore[union-attr]


async def test_partial_capture_and_idempotent_reserve(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 30, kind=EntryKind.GRANT, reference="g", operation=None)
    hold = await credits.reserve(user, 30, operation="email.bulk_find", reference="job_1")
    same = await credits.reserve(user, 30, operation="email.bulk_find", reference="job_1")
    assert same.id == hold.id
    assert await credits.capture(user, hold.id, 12)
    position = await credits.balance(user)
    assert (position.balance, position.held) == (18, 0)
    hold2 = await credits.reserve(user, 3, operation="x")
    with pytest.raises(ValueError, match="more than the hold"):
        await credits.capture(user, hold2.id, 4)


async def test_other_users_holds_are_unknown(db: Database) -> None:
    credits = CreditStore(db.engine)
    alice, bob = await _user(db, "alice"), await _user(db, "bob")
    await credits.add(alice, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    hold = await credits.reserve(alice, 5, operation="x")
    with pytest.raises(UnknownHold):
        await credits.capture(bob, hold.id)
    assert await credits.hold(bob, hold.id) is None
    assert await credits.entries(bob, limit=10) == []


async def test_expired_holds_are_released(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    hold = await credits.reserve(user, 5, operation="x", ttl=-1)
    assert await credits.expire() == 1
    assert (await credits.hold(user, hold.id)).state is HoldState.EXPIRED  # type: ignore[union-attr]
    assert (await credits.balance(user)).available == 5
    assert await credits.expire() == 0


async def test_parallel_reservations_never_overdraw(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 10, kind=EntryKind.GRANT, reference="g", operation=None)

    async def one() -> bool:
        try:
            hold = await credits.reserve(user, 1, operation="x")
        except InsufficientBalance:
            return False
        return await credits.capture(user, hold.id)

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert results.count(True) == 10
    position = await credits.balance(user)
    assert (position.balance, position.held, position.used) == (0, 0, 10)
    assert len(await credits.entries(user, limit=100, operation="x")) == 10


async def test_entries_paginate(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    for i in range(5):
        await credits.add(user, 1, kind=EntryKind.GRANT, reference=f"g{i}", operation="grant")
    first = await credits.entries(user, limit=2)
    second = await credits.entries(user, limit=2, after=first[-1].id)
    third = await credits.entries(user, limit=2, offset=4)
    assert len({e.id for e in [*first, *second, *third]}) == 5
    assert await credits.spent_since(user, 0) == 0
