"""Suppression entries in the database, and :meth:`SuppressionStore.is_suppressed`: the check
every send path makes before mailing a batch.

The check is one indexed query for a batch: each address contributes its own value and its
domain's suffixes (:func:`lookup_keys`), all matched on the unique ``(user_id, value)`` index
with ``value = ANY(:keys)`` on PostgreSQL (one array parameter, 50,000 keys a query) or
``value IN (...)`` on SQLite (2,000 keys a query, under its bound-parameter limit).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, any_, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import Suppression
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.suppression.normalise import lookup_keys

__all__ = ["KINDS", "MAX_ENTRIES", "SOURCES", "Entry", "SuppressionStore"]

KINDS = ("email", "domain")
SOURCES = ("manual", "import", "bounce", "unsubscribe")
MAX_ENTRIES = 1_000_000
"""Entries per user (a bound; imports past it are refused)."""
_CHUNK = 2000
"""Lookup keys per ``IN`` query (well under both backends' bound-parameter limits)."""
_PG_CHUNK = 50_000
"""Lookup keys per ``= ANY(array)`` query on PostgreSQL (one bound array)."""


@dataclass(frozen=True)
class Entry:
    """A suppressed address or domain."""

    id: str
    kind: str
    value: str
    reason: str | None
    source: str
    created_at: float


_COLUMNS = (
    Suppression.id,
    Suppression.kind,
    Suppression.value,
    Suppression.reason,
    Suppression.source,
    Suppression.created_at,
)


def _entry(row: Any) -> Entry:
    return Entry(*row)


def _insert_ignoring_duplicates(conn: AsyncConnection) -> Any:
    """INSERT ... ON CONFLICT (user_id, value) DO NOTHING RETURNING value (both backends);
    executed with a list of rows, SQLAlchemy batches it into multi-row statements."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(Suppression)
        .on_conflict_do_nothing(index_elements=["user_id", "value"])
        .returning(Suppression.value)
    )


def _matching(conn: AsyncConnection, user_id: str, keys: list[str]) -> Any:
    """The user's entries whose value is one of ``keys``: ``= ANY(array)`` on PostgreSQL (one
    parameter), ``IN (...)`` on SQLite."""
    query = select(*_COLUMNS).where(Suppression.user_id == user_id)
    if conn.dialect.name == "postgresql":
        array = bindparam("keys", value=keys, type_=ARRAY(Text()))
        return query.where(Suppression.value == any_(array))
    return query.where(Suppression.value.in_(keys))


class SuppressionStore:
    """Add (idempotent), list, delete and check a user's suppression entries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self, user_id: str, kind: str, value: str, *, reason: str | None, source: str
    ) -> tuple[Entry, bool]:
        """(entry, created): an existing entry for ``value`` is returned as it is."""
        entry = Entry(new_id("sup"), kind, value, reason, source, time.time())
        async with write_transaction(self.engine) as conn:
            statement = _insert_ignoring_duplicates(conn)
            inserted = (await conn.execute(statement, [self._row(user_id, entry)])).all()
            if inserted:
                return entry, True
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        Suppression.user_id == user_id, Suppression.value == value
                    )
                )
            ).one()
        return _entry(row), False

    @staticmethod
    def _row(user_id: str, entry: Entry) -> dict[str, Any]:
        return {
            "id": entry.id,
            "user_id": user_id,
            "kind": entry.kind,
            "value": entry.value,
            "reason": entry.reason,
            "source": entry.source,
            "created_at": entry.created_at,
        }

    async def add_many(
        self,
        user_id: str,
        values: Sequence[tuple[str, str]],
        *,
        reason: str | None,
        source: str,
    ) -> set[str]:
        """Add ``(kind, value)`` pairs (distinct values) in one transaction; the values that
        were new (the others were already present)."""
        now = time.time()
        added: set[str] = set()
        async with write_transaction(self.engine) as conn:
            rows = [
                self._row(user_id, Entry(new_id("sup"), kind, value, reason, source, now))
                for kind, value in values
            ]
            if rows:
                result = await conn.execute(_insert_ignoring_duplicates(conn), rows)
                added.update(row.value for row in result.all())
        return added

    async def get(self, user_id: str, entry_id: str) -> Entry | None:
        """The user's entry, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        Suppression.id == entry_id, Suppression.user_id == user_id
                    )
                )
            ).first()
        return _entry(row) if row else None

    async def list(
        self,
        user_id: str,
        *,
        search: str | None = None,
        kind: str | None = None,
        source: str | None = None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Entry]:
        """Newest first; ``search`` matches part of the (normalised, lower-case) value."""
        query = select(*_COLUMNS).where(Suppression.user_id == user_id)
        if search:
            query = query.where(Suppression.value.contains(search.lower(), autoescape=True))
        if kind is not None:
            query = query.where(Suppression.kind == kind)
        if source is not None:
            query = query.where(Suppression.source == source)
        query = newest_first(query, Suppression.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(row) for row in rows]

    async def delete(self, user_id: str, entry_id: str) -> bool:
        """Remove the user's entry; False when there was none."""
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                delete(Suppression).where(
                    Suppression.id == entry_id, Suppression.user_id == user_id
                )
            )
        return bool(done.rowcount)

    async def matching(self, user_id: str, values: Iterable[str]) -> dict[str, Entry]:
        """The user's entries whose value is one of ``values`` (lookup keys), by value."""
        wanted = sorted(set(values))
        found: dict[str, Entry] = {}
        if wanted:
            async with read_connection(self.engine) as conn:
                chunk = _CHUNK if conn.dialect.name == "sqlite" else _PG_CHUNK
                for start in range(0, len(wanted), chunk):
                    rows = await conn.execute(
                        _matching(conn, user_id, wanted[start : start + chunk])
                    )
                    found.update((row.value, _entry(row)) for row in rows)
        return found

    async def is_suppressed(
        self, user_id: str, addresses: Iterable[str]
    ) -> dict[str, Entry | None]:
        """Each address (as given) -> the entry suppressing it, or None.

        The most specific entry wins: the address itself, then its domain, then the nearest
        parent domain. A value that is not an address maps to None (send paths reject it on
        their own). One query per batch (see the module docstring).
        """
        keys = {address: lookup_keys(address) for address in addresses}
        found = await self.matching(user_id, {key for chain in keys.values() for key in chain})
        return {
            address: next((found[key] for key in chain if key in found), None)
            for address, chain in keys.items()
        }

    async def count(self, user_id: str) -> int:
        """How many entries the user holds."""
        async with read_connection(self.engine) as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(Suppression)
                        .where(Suppression.user_id == user_id)
                    )
                ).scalar_one()
            )
