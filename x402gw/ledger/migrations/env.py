"""Alembic environment: runs the ledger revisions on the connection `Ledger.migrate` hands over.

A separate version table keeps these revisions apart from any other Alembic history in the database.
"""

from __future__ import annotations

from alembic import context

from x402gw.ledger._statements import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the x402gw ledger migrations through Ledger.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
