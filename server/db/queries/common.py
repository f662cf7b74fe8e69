"""Statements shared by both backends, and the plain data they exchange with the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from server.prospects.ranking import SCORE_DIGITS, idf

__all__ = [
    "SCORE_DIGITS",
    "SearchPlan",
    "load_weights",
    "pool_size",
    "write_stats",
]

_WEIGHTS = text("SELECT tag, weight FROM tag_stats WHERE tag IN :tags").bindparams(
    bindparam("tags", expanding=True)
)
_POOL = text("SELECT prospect_count FROM prospect_pool WHERE id = 1")


@dataclass(frozen=True)
class SearchPlan:
    """A normalised search: tags, W(query), filters as comparison keys, and the page."""

    tags: Sequence[str]
    query_weight: float
    limit: int
    offset: int
    company_key: str | None = None
    domain: str | None = None
    title_key: str | None = None
    location_key: str | None = None

    def filter_params(self) -> dict[str, Any]:
        """Only the filters that are set, by bind-parameter name."""
        params = {
            "company_key": self.company_key,
            "domain": self.domain,
            "title_key": self.title_key,
            "location_key": self.location_key,
        }
        return {k: v for k, v in params.items() if v is not None}


async def pool_size(conn: AsyncConnection) -> int:
    """N, the number of prospects (kept in ``prospect_pool``)."""
    return int((await conn.execute(_POOL)).scalar_one())


async def load_weights(conn: AsyncConnection, tags: Sequence[str]) -> dict[str, float]:
    """The stored IDF weight of each of ``tags`` that occurs in the pool."""
    if not tags:
        return {}
    rows = await conn.execute(_WEIGHTS, {"tags": list(tags)})
    return {str(tag): float(weight) for tag, weight in rows}


async def write_stats(conn: AsyncConnection, counts: Sequence[tuple[str, int]]) -> None:
    """Replace ``tag_stats`` and the pool size from fresh document frequencies."""
    n = int((await conn.execute(text("SELECT COUNT(*) FROM prospects"))).scalar_one())
    await conn.execute(text("DELETE FROM tag_stats"))
    if counts:
        await conn.execute(
            text("INSERT INTO tag_stats (tag, df, weight) VALUES (:tag, :df, :weight)"),
            [{"tag": tag, "df": df, "weight": idf(df, n)} for tag, df in counts],
        )
    await conn.execute(text("UPDATE prospect_pool SET prospect_count = :n WHERE id = 1"), {"n": n})


FILTER_SQL = {
    "company_key": "p.company_key = :company_key",
    "domain": "p.domain = :domain",
}
"""Filters whose SQL is the same on both backends (substring filters differ)."""
