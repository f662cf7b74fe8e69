"""Persistence: SQLAlchemy models, Alembic migrations and per-backend SQL."""

from __future__ import annotations

from server.db.engine import Database

__all__ = ["Database"]
