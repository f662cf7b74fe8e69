"""Run Alembic programmatically on a connection the caller already holds, one process at a time.

Worker processes starting together on a new database each migrate at start. Without a lock they
all read "no revision" and all create the tables (``table alembic_version already exists``), so
the upgrade first takes the database's write lock (SQLite: ``BEGIN IMMEDIATE``) or a transaction
advisory lock (PostgreSQL); the others wait, then find the database at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
PG_MIGRATION_LOCK = 0x6261766C_696F0001
"""pg_advisory_xact_lock key of server migrations ("bavlio" + 1; x402gw's ledger has its own)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at our migrations; env.py uses ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    """Upgrade to head inside the caller's transaction, after taking the migration lock.

    The lock is held until that transaction ends, so ``connection`` must not have started one
    on SQLite yet (``engine.begin()`` does not emit BEGIN there).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with the code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
