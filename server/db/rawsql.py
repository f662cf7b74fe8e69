"""Hot-path SQL sent to the driver as text (``exec_driver_sql``), one string per dialect.

Building and compiling a SQLAlchemy Core statement costs more CPU than SQLite or PostgreSQL takes
to run a one-row query; the few statements of every keyed request (key lookup, credit pre-check,
debit) are written once with ``?`` placeholders and renumbered to ``$n`` for asyncpg.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["RawStatement", "numbered"]

_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, … (PostgreSQL's native style; no ``?`` in literals)."""
    count = 0

    def next_mark(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _MARK.sub(next_mark, sql)


@dataclass(frozen=True)
class RawStatement:
    """One SQL text in ``?`` style and its PostgreSQL form."""

    sql: str
    postgresql: str = field(init=False)

    def __post_init__(self) -> None:
        if "'?'" in self.sql:
            raise ValueError("a literal '?' would be renumbered")
        object.__setattr__(self, "postgresql", numbered(self.sql))

    def text(self, dialect: str) -> str:
        """The text for ``dialect`` (``postgresql`` or ``sqlite``)."""
        return self.postgresql if dialect == "postgresql" else self.sql

    async def run(self, conn: AsyncConnection, params: Sequence[Any]) -> CursorResult[Any]:
        """Execute on ``conn`` with positional ``params``."""
        return await conn.exec_driver_sql(self.text(conn.dialect.name), tuple(params))
