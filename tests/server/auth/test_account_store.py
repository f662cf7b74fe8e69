"""Users and API keys in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from server.auth import keys
from server.auth.store import MAX_KEYS, AccountStore, KeyLimitReached
from server.db.engine import Database

SECRET = b"k" * 32


async def test_user_is_created_once_per_subject(db: Database) -> None:
    store = AccountStore(db.engine, SECRET)
    results = await asyncio.gather(
        *(store.user_for_subject("sub-1", email="a@x.test", plan="free") for _ in range(5))
    )
    assert len({user.id for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    again, created = await store.user_for_subject("sub-1", email=None, plan="paid")
    assert not created
    assert again.plan == "free"
    await store.set_plan(again.id, "paid")
    assert (await store.user(again.id)).plan == "paid"  # type: ignore[union-attr]
    assert await store.user("usr_nope") is None


async def test_key_lifecycle(db: Database) -> None:
    store = AccountStore(db.engine, SECRET)
    user, _ = await store.user_for_subject("sub-1", email=None, plan="paid")
    raw, record = await store.create_key(user.id, "ci", ("credits:read",))
    assert keys.looks_valid(raw)
    assert record.prefix == keys.display_prefix(raw)
    found = await store.authenticate(raw)
    assert found is not None
    assert found[0].id == user.id
    assert found[1].id == record.id
    assert found[1].scopes == ("credits:read",)
    listed = await store.keys(user.id)
    assert [k.id for k in listed] == [record.id]
    assert listed[0].last_used_at is not None
    # another user cannot revoke it
    other, _ = await store.user_for_subject("sub-2", email=None, plan="paid")
    assert await store.revoke_key(other.id, record.id) is None
    assert await store.authenticate(raw) is not None
    revoked = await store.revoke_key(user.id, record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await store.authenticate(raw) is None
    again = await store.revoke_key(user.id, record.id)  # revoking twice keeps the first time
    assert again is not None
    assert again.revoked_at == revoked.revoked_at


async def test_unknown_and_malformed_keys(db: Database) -> None:
    store = AccountStore(db.engine, SECRET)
    assert await store.authenticate(keys.generate_key()) is None
    assert await store.authenticate("bav_live_short") is None
    user, _ = await store.user_for_subject("sub-1", email=None, plan="paid")
    raw, _ = await store.create_key(user.id, "k", ("*",))
    # the same key under another server secret is unknown
    assert await AccountStore(db.engine, b"z" * 32).authenticate(raw) is None


async def test_key_cap(db: Database) -> None:
    store = AccountStore(db.engine, SECRET)
    user, _ = await store.user_for_subject("sub-1", email=None, plan="paid")
    made = [await store.create_key(user.id, f"k{i}", ("*",)) for i in range(MAX_KEYS)]
    with pytest.raises(KeyLimitReached):
        await store.create_key(user.id, "one too many", ("*",))
    await store.revoke_key(user.id, made[0][1].id)
    await store.create_key(user.id, "fits again", ("*",))
