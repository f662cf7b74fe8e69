"""Extraction records in the database (the JSON document itself is in file storage under
``storage_key``); every call takes the owner, so another user's id is not found."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import Extraction
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction

__all__ = ["ExtractionRecord", "ExtractionStore"]


@dataclass(frozen=True)
class ExtractionRecord:
    """An extraction as its owner sees it."""

    id: str
    user_id: str
    title: str
    source: str
    storage_key: str
    lead_count: int
    size_bytes: int
    columns: tuple[str, ...]
    meta: dict[str, Any]
    session_id: str | None
    created_at: float
    updated_at: float


_COLUMNS = (
    Extraction.id,
    Extraction.user_id,
    Extraction.title,
    Extraction.source,
    Extraction.storage_key,
    Extraction.lead_count,
    Extraction.size_bytes,
    Extraction.columns,
    Extraction.meta,
    Extraction.session_id,
    Extraction.created_at,
    Extraction.updated_at,
)


def _record(row: Any) -> ExtractionRecord:
    return ExtractionRecord(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        source=row.source,
        storage_key=row.storage_key,
        lead_count=row.lead_count,
        size_bytes=row.size_bytes,
        columns=tuple(row.columns or ()),
        meta=dict(row.meta or {}),
        session_id=row.session_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class ExtractionStore:
    """Extractions of every user."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        user_id: str,
        extraction_id: str,
        *,
        title: str,
        source: str,
        storage_key: str,
        lead_count: int,
        size_bytes: int,
        columns: Sequence[str],
        meta: Mapping[str, Any],
    ) -> ExtractionRecord:
        """Record a stored document."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                insert(Extraction).values(
                    id=extraction_id,
                    user_id=user_id,
                    title=title,
                    source=source,
                    storage_key=storage_key,
                    lead_count=lead_count,
                    size_bytes=size_bytes,
                    columns=list(columns),
                    meta=dict(meta),
                    session_id=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        record = await self.get(user_id, extraction_id)
        assert record is not None
        return record

    async def get(self, user_id: str, extraction_id: str) -> ExtractionRecord | None:
        """The user's extraction, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        Extraction.id == extraction_id, Extraction.user_id == user_id
                    )
                )
            ).first()
        return _record(row) if row else None

    async def list(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        source: str | None = None,
    ) -> list[ExtractionRecord]:
        """The user's extractions, newest first (``after``: an id, for cursors)."""
        query = select(*_COLUMNS).where(Extraction.user_id == user_id)
        if source is not None:
            query = query.where(Extraction.source == source)
        query = newest_first(query, Extraction.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def rename(self, user_id: str, extraction_id: str, title: str) -> ExtractionRecord | None:
        """Set the title; None if not found."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                update(Extraction)
                .where(Extraction.id == extraction_id, Extraction.user_id == user_id)
                .values(title=title, updated_at=time.time())
            )
        return await self.get(user_id, extraction_id) if result.rowcount else None

    async def link_session(self, user_id: str, extraction_id: str, session_id: str) -> None:
        """Remember the session last made from the extraction."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(Extraction)
                .where(Extraction.id == extraction_id, Extraction.user_id == user_id)
                .values(session_id=session_id, updated_at=time.time())
            )

    async def unlink_session(self, user_id: str, session_id: str) -> None:
        """Forget a deleted session."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(Extraction)
                .where(Extraction.user_id == user_id, Extraction.session_id == session_id)
                .values(session_id=None, updated_at=time.time())
            )

    async def delete(self, user_id: str, extraction_id: str) -> ExtractionRecord | None:
        """Delete the user's extraction; the record it was (for its file), or None."""
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        Extraction.id == extraction_id, Extraction.user_id == user_id
                    )
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                delete(Extraction).where(
                    Extraction.id == extraction_id, Extraction.user_id == user_id
                )
            )
        return _record(row)
