"""Users and API keys in the database (the I/O edge of :mod:`server.auth.keys`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.auth import keys
from server.db.hotpg import first_row
from server.db.models import ApiKey, CreditAccount, User
from server.db.rawsql import Busy, RawStatement, inline_sqlite
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = [
    "MAX_KEYS",
    "AccountStore",
    "KeyLimitReached",
    "KeyMatch",
    "KeyRecord",
    "UserRecord",
]

MAX_KEYS = 50
"""Active keys per user; the 51st is refused (409) until one is revoked."""
LAST_USED_GRANULARITY = 60.0
"""``last_used_at`` is written at most once a minute per key (no write per request)."""


class KeyLimitReached(Exception):
    """The user already holds :data:`MAX_KEYS` active keys."""


@dataclass(frozen=True)
class UserRecord:
    """An account holder."""

    id: str
    subject: str
    email: str | None
    plan: str
    created_at: float


@dataclass(frozen=True)
class KeyRecord:
    """An API key as lists show it (never the key itself)."""

    id: str
    user_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


class KeyMatch(NamedTuple):
    """A live key, its user, and the credits available when it was read (a pre-check)."""

    user: UserRecord
    key: KeyRecord
    available_credits: int


# The key, its user and the user's available credits in one indexed read (every keyed request).
_AUTHENTICATE = RawStatement(
    "SELECT k.id, k.user_id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at, "
    "k.revoked_at, u.subject, u.email, u.plan, u.created_at, a.balance - a.held "
    "FROM api_keys AS k JOIN users AS u ON u.id = k.user_id "
    "LEFT JOIN credit_accounts AS a ON a.user_id = k.user_id WHERE k.key_hash = ?"
)
_TOUCH = RawStatement("UPDATE api_keys SET last_used_at = ? WHERE id = ?")


def _user(row: object) -> UserRecord:
    return UserRecord(
        id=row.id,  # type: ignore[attr-defined]
        subject=row.subject,  # type: ignore[attr-defined]
        email=row.email,  # type: ignore[attr-defined]
        plan=row.plan,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


def _key(row: object) -> KeyRecord:
    return KeyRecord(
        id=row.id,  # type: ignore[attr-defined]
        user_id=row.user_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        prefix=row.prefix,  # type: ignore[attr-defined]
        scopes=tuple(json.loads(row.scopes)),  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        last_used_at=row.last_used_at,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


_USER_COLUMNS = (User.id, User.subject, User.email, User.plan, User.created_at)
_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.user_id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.scopes,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)


class AccountStore:
    """Users (found or created by token subject) and their API keys."""

    def __init__(self, engine: AsyncEngine, key_secret: bytes) -> None:
        self.engine = engine
        self._secret = key_secret

    async def user(self, user_id: str) -> UserRecord | None:
        """The user with ``user_id``, if any."""
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(select(*_USER_COLUMNS).where(User.id == user_id))).first()
        return _user(row) if row else None

    async def lookup(self, value: str) -> UserRecord | None:
        """A user by id or by token subject (the email for users made by ``bavlio users``)."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_USER_COLUMNS).where((User.id == value) | (User.subject == value))
                )
            ).first()
        return _user(row) if row else None

    async def user_for_subject(
        self, subject: str, *, email: str | None, plan: str
    ) -> tuple[UserRecord, bool]:
        """The user of a token subject, created (with ``plan``) on first sight; (user, created)."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(select(*_USER_COLUMNS).where(User.subject == subject))
            ).first()
        if row is not None:
            return _user(row), False
        record = UserRecord(new_id("usr"), subject, email, plan, time.time())
        try:
            async with write_transaction(self.engine) as conn:
                await conn.execute(
                    insert(User).values(
                        id=record.id,
                        subject=subject,
                        email=email,
                        plan=plan,
                        created_at=record.created_at,
                        lookups_used=0,
                    )
                )
                await conn.execute(
                    insert(CreditAccount).values(user_id=record.id, balance=0, held=0)
                )
        except IntegrityError:  # created concurrently by another request: use that one
            async with read_connection(self.engine) as conn:
                row = (
                    await conn.execute(select(*_USER_COLUMNS).where(User.subject == subject))
                ).one()
            return _user(row), False
        return record, True

    async def count_lookup(self, user_id: str, month: str, limit: int) -> int | None:
        """Count one lookup in ``month`` (``YYYY-MM``); the lookups left, or None when the
        month's ``limit`` is used up (one conditional UPDATE: concurrent lookups never pass it)."""
        async with write_transaction(self.engine) as conn:
            same = User.lookup_month == month
            done = await conn.execute(
                update(User)
                .where(
                    User.id == user_id,
                    ~same | User.lookup_month.is_(None) | (User.lookups_used < limit),
                )
                .values(
                    lookups_used=case((same, User.lookups_used + 1), else_=1),
                    lookup_month=month,
                )
            )
            if done.rowcount != 1:
                return None
            used = (
                await conn.execute(select(User.lookups_used).where(User.id == user_id))
            ).scalar_one()
        return max(limit - int(used), 0)

    async def set_plan(self, user_id: str, plan: str) -> None:
        """Move a user to ``plan``."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(update(User).where(User.id == user_id).values(plan=plan))

    async def create_key(
        self, user_id: str, name: str, scopes: tuple[str, ...]
    ) -> tuple[str, KeyRecord]:
        """A new key (returned once, in the clear) and its record; KeyLimitReached past the cap."""
        raw = keys.generate_key()
        record = KeyRecord(
            id=new_id("key"),
            user_id=user_id,
            name=name,
            prefix=keys.display_prefix(raw),
            scopes=scopes,
            created_at=time.time(),
            last_used_at=None,
            revoked_at=None,
        )
        async with write_transaction(self.engine) as conn:
            active = (
                await conn.execute(
                    select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                )
            ).all()
            if len(active) >= MAX_KEYS:
                raise KeyLimitReached
            await conn.execute(
                insert(ApiKey).values(
                    id=record.id,
                    user_id=user_id,
                    name=name,
                    key_hash=keys.key_hash(raw, self._secret),
                    prefix=record.prefix,
                    scopes=json.dumps(list(scopes)),
                    created_at=record.created_at,
                )
            )
        return raw, record

    async def keys(
        self, user_id: str, *, limit: int | None = None, offset: int = 0, after: str | None = None
    ) -> list[KeyRecord]:
        """The user's keys, newest first, revoked ones included (they show ``revoked_at``);
        ``limit`` rows from ``offset``, or after the key id ``after``."""
        query = select(*_KEY_COLUMNS).where(ApiKey.user_id == user_id)
        if after is not None:
            query = query.where(ApiKey.id < after)
        query = query.order_by(ApiKey.id.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_key(row) for row in rows]

    async def revoke_key(self, user_id: str, key_id: str) -> KeyRecord | None:
        """Revoke the user's key (soft delete); None when the user has no such key."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (
                await conn.execute(
                    select(*_KEY_COLUMNS).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
                )
            ).first()
        return _key(row) if row else None

    async def authenticate(self, raw: str) -> KeyMatch | None:
        """The user and key of a raw key; None for a malformed, unknown or revoked key.

        A key failing its checksum costs no query; a live one costs one read (revocation shows
        on the next request in every process: nothing is cached). ``last_used_at`` is refreshed
        at most once a minute.
        """
        if not keys.looks_valid(raw):
            return None
        digest = keys.key_hash(raw, self._secret)
        row = None
        inline = inline_sqlite(self.engine)
        try:
            if inline is None:
                raise Busy
            row = inline.first(_AUTHENTICATE, (digest,))
        except Busy:  # PostgreSQL (its hot connections), or SQLite's inline one busy
            row = await first_row(self.engine, _AUTHENTICATE, (digest,), read_only=True)
        if row is None or row[7] is not None:
            return None
        key_id, user_id, name, prefix, scopes, created, last_used = row[:7]
        key = KeyRecord(
            key_id, user_id, name, prefix, tuple(json.loads(scopes)), created, last_used, None
        )
        user = UserRecord(user_id, row[8], row[9], row[10], row[11])
        now = time.time()
        if last_used is None or now - last_used >= LAST_USED_GRANULARITY:
            async with write_transaction(self.engine) as conn:
                await conn.exec_driver_sql(_TOUCH.text(conn.dialect.name), (now, key_id))
        return KeyMatch(user, key, int(row[12] or 0))
