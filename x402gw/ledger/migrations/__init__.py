"""Alembic environment and revisions for the x402gw payment ledger (applied by `Ledger.migrate`)."""
