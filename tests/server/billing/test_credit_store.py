"""The credit ledger on SQLite and PostgreSQL: holds settle once, balances never go negative."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from server.auth.store import AccountStore
from server.billing.credit_rules import CreditRuleError, EntryKind, HoldState
from server.billing.credits import (
    CreditStore,
    DuplicateCharge,
    InsufficientBalance,
    UnknownAccount,
    UnknownHold,
)
from server.db.engine import Database
from server.db.models import CreditAccount
from server.db.tx import write_transaction


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


async def test_parallel_debits_never_overdraw(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 10, kind=EntryKind.GRANT, reference="g", operation=None)
    hold = await credits.reserve(user, 3, operation="job")  # held credits are not debitable

    async def one() -> int | InsufficientBalance:
        try:
            return await credits.debit(user, 1, operation="email.validate")
        except InsufficientBalance as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert sorted(r for r in results if isinstance(r, int)) == list(range(3, 10))
    refused = [r for r in results if isinstance(r, InsufficientBalance)]
    assert {(r.available, r.needed) for r in refused} == {(0, 1)}
    assert len(refused) == 33
    position = await credits.balance(user)
    assert (position.balance, position.held, position.used) == (3, 3, 7)
    lines = await credits.entries(user, limit=100, operation="email.validate")
    assert sorted(e.balance_after for e in lines) == list(range(3, 10))
    assert {e.kind for e in lines} == {EntryKind.DEBIT}
    assert {e.amount for e in lines} == {-1}
    assert await credits.available(user) == 0
    assert await credits.release(user, hold.id)
    assert await credits.available(user) == 3


async def test_debit_books_once_per_reference_and_refuses_what_it_cannot_cover(
    db: Database,
) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    assert await credits.debit(user, 2, operation="x", reference="call-1") == 3
    with pytest.raises(DuplicateCharge):  # the same charge again: refused, nothing taken
        await credits.debit(user, 2, operation="x", reference="call-1")
    with pytest.raises(InsufficientBalance) as short:
        await credits.debit(user, 4, operation="x")
    assert (short.value.available, short.value.needed) == (3, 4)
    position = await credits.balance(user)
    assert (position.balance, position.held, position.used) == (3, 0, 2)
    assert len(await credits.entries(user, limit=10, operation="x")) == 1
    for bad in (0, -1):
        with pytest.raises(CreditRuleError):
            await credits.debit(user, bad, operation="x")
    with pytest.raises(InsufficientBalance) as nobody:  # no account: nothing to take
        await credits.debit("usr_none", 1, operation="x")
    assert nobody.value.available == 0
    assert await credits.available("usr_none") == 0


async def test_entries_paginate(db: Database) -> None:
    credits, user = CreditStore(db.engine), await _user(db)
    for i in range(5):
        await credits.add(user, 1, kind=EntryKind.GRANT, reference=f"g{i}", operation="grant")
    first = await credits.entries(user, limit=2)
    second = await credits.entries(user, limit=2, after=first[-1].id)
    third = await credits.entries(user, limit=2, offset=4)
    assert len({e.id for e in [*first, *second, *third]}) == 5
    assert await credits.spent_since(user, 0) == 0


async def test_a_debit_cancelled_while_it_waits_still_books_whole(db: Database) -> None:
    """The caller goes away while its debit waits for a lock (the pooled path: PostgreSQL's row
    lock, SQLite's write lock): the debit still books once, with its ledger line."""
    credits, user = CreditStore(db.engine), await _user(db)
    await credits.add(user, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    async with write_transaction(db.engine) as holder:
        await holder.execute(  # hold the account's row (PostgreSQL) or the write lock (SQLite)
            update(CreditAccount)
            .where(CreditAccount.user_id == user)
            .values(balance=CreditAccount.balance)
        )
        caller = asyncio.create_task(credits.debit(user, 1, operation="email.validate"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (pooled := _pooled_debits()):  # the debit is waiting for the lock
            assert not caller.done(), caller
            assert loop.time() < deadline, "the debit never reached its pooled path"
            await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
    await asyncio.gather(*pooled)  # the lock is free: the shielded debit finishes
    position = await credits.balance(user)
    assert (position.balance, position.used) == (4, 1)
    lines = await credits.entries(user, limit=10, operation="email.validate")
    assert [(e.amount, e.balance_after) for e in lines] == [(-1, 4)]


def _pooled_debits() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "CreditStore._debit_pooled"
    ]
