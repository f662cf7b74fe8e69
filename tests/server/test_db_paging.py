"""newest_first: one page of a list by a time-ordered id, on SQLite and PostgreSQL (the query
every keyed list route's store builds)."""

from __future__ import annotations

import sqlalchemy as sa

from server.db.engine import Database
from server.db.paging import newest_first
from server.db.tx import read_connection

_T = sa.table("paging_items", sa.column("id", sa.String), sa.column("owner", sa.String))


async def _ids(db: Database, *, after: str | None, offset: int, limit: int) -> list[str]:
    query = newest_first(sa.select(_T.c.id), _T.c.id, after=after, offset=offset, limit=limit)
    async with read_connection(db.engine) as conn:
        return [str(i) for i in (await conn.execute(query)).scalars()]


async def test_pages_newest_first_by_cursor_and_offset(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE paging_items (id VARCHAR(8), owner VARCHAR(8))"))
        await conn.execute(
            sa.insert(_T), [{"id": f"itm_{i}", "owner": "ann"} for i in (3, 1, 5, 2, 4)]
        )
    assert await _ids(db, after=None, offset=0, limit=2) == ["itm_5", "itm_4"]
    assert await _ids(db, after="itm_4", offset=0, limit=2) == ["itm_3", "itm_2"]
    assert await _ids(db, after=None, offset=3, limit=10) == ["itm_2", "itm_1"]
    assert await _ids(db, after="itm_2", offset=0, limit=10) == ["itm_1"]
    assert await _ids(db, after="itm_1", offset=0, limit=10) == []
