"""Migration 0002 builds exactly the job tables the models describe, on both backends, and
downgrades cleanly."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from jobs_support import db_fixture, db_url_fixture  # noqa: F401 (fixtures)
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from server.db.engine import Database
from server.db.migrate import alembic_config
from server.db.models import Base

JOB_TABLES = {"jobs", "job_items"}


def _job_diffs(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs = compare_metadata(context, Base.metadata)
    flat = [d for group in diffs for d in (group if isinstance(group, list) else [group])]

    def table_of(diff: Any) -> str | None:
        for part in diff[1:]:
            name = getattr(part, "table", None)
            name = getattr(name, "name", None) or getattr(part, "name", None)
            if isinstance(name, str):
                return name
            if isinstance(part, str):
                return part
        return None

    return [d for d in flat if table_of(d) in JOB_TABLES]


async def test_the_migration_matches_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_job_diffs) == []
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("jobs")})
    assert names >= JOB_TABLES
    assert indexes >= {"ix_jobs_owner_id_id", "ix_jobs_state_lease_expires"}


async def test_downgrade_to_0001_drops_the_job_tables_and_upgrade_restores_them(
    db: Database,
) -> None:
    def down(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0001")

    async with db.engine.begin() as conn:
        await conn.run_sync(down)
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert not names & JOB_TABLES
    assert "prospects" in names
    await db.migrate()
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert names >= JOB_TABLES
