"""The Alembic revisions create exactly the tables the models declare, on both backends."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server.db.engine import Database
from server.db.models import Base


async def test_no_difference_between_models_and_migrations(db: Database) -> None:
    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection)
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as conn:
        changes = await conn.run_sync(diff)

    def expected(change: Any) -> bool:
        # Tables of other migration trees (x402gw's ledger) share the database; prospect tags are a
        # GIN index on PostgreSQL and the prospect_tags table on SQLite (revision 0001).
        if isinstance(change, tuple) and change[0] == "remove_table":
            return True
        if not isinstance(change, tuple):
            return False
        if db.dialect == "sqlite":
            return change[0] == "add_index" and change[1].name == "ix_prospects_tags_gin"
        return change[0] in {"add_table", "add_index"} and "prospect_tags" in str(
            getattr(change[1], "name", "")
        )

    assert [c for c in changes if not expected(c)] == []
