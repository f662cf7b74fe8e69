"""One page of a list, newest first: the keyed API's list routes page by a time-ordered id
(``after``: the last id of the previous page, for cursors) or by ``offset``."""

from __future__ import annotations

from typing import Any, TypeVarTuple

from sqlalchemy import Select
from sqlalchemy.sql.elements import SQLColumnExpression

__all__ = ["newest_first"]

Row = TypeVarTuple("Row")


def newest_first(
    query: Select[*Row],
    id_column: SQLColumnExpression[Any],
    *,
    after: str | None,
    offset: int,
    limit: int,
) -> Select[*Row]:
    """``query`` as one page: ids below ``after`` (when given), newest id first, ``offset`` rows
    skipped, at most ``limit``."""
    if after is not None:
        query = query.where(id_column < after)
    return query.order_by(id_column.desc()).offset(offset).limit(limit)
