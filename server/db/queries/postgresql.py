"""Prospect pool SQL for PostgreSQL: ``text[]`` tags, GIN index, ``&&`` overlap pre-filter.

Search scores candidate ids first (a hash join of their unnested tags with ``tag_stats``) and
reads full rows only for the requested page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, Text, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db.models import Prospect
from server.db.queries.common import FILTER_SQL, SCORE_DIGITS, SearchPlan, write_stats

__all__ = ["count_matches", "decode_tags", "insert_prospects", "refresh_stats", "search"]

_SUBSTRING = {
    "title_key": "strpos(p.title_key, :title_key) > 0",
    "location_key": "strpos(p.location_key, :location_key) > 0",
}

_SEARCH = """
WITH cand AS MATERIALIZED (
  SELECT p.id, p.tags FROM prospects p WHERE p.tags && :tags {where}
),
scored AS (
  SELECT c.id,
         COALESCE(SUM(ts.weight) FILTER (WHERE ts.tag = ANY(:tags)), 0) AS inter,
         SUM(ts.weight) AS own
  FROM cand c CROSS JOIN LATERAL unnest(c.tags) AS u(tag) JOIN tag_stats ts ON ts.tag = u.tag
  GROUP BY c.id
),
ranked AS (
  SELECT s.id, ROUND(CAST(s.inter / (:wq + s.own - s.inter) AS numeric), {digits}) AS score,
         COUNT(*) OVER () AS total
  FROM scored s
  ORDER BY score DESC, s.id ASC
  LIMIT :limit OFFSET :offset
)
SELECT p.id, p.name, p.title, p.company, p.domain, p.linkedin_url, p.email, p.location, p.tags,
       r.score, r.total
FROM ranked r JOIN prospects p ON p.id = r.id
ORDER BY r.score DESC, r.id ASC
"""

_TAGS = bindparam("tags", type_=ARRAY(Text()))


async def insert_prospects(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert prospects (tags go into the ``text[]`` column); returns how many were inserted."""
    if not rows:
        return 0
    await conn.execute(insert(Prospect), list(rows))
    return len(rows)


async def refresh_stats(conn: AsyncConnection) -> None:
    """Recompute document frequencies and weights by unnesting every tag array."""
    rows = await conn.execute(
        text("SELECT u.tag, COUNT(*) FROM prospects p, unnest(p.tags) AS u(tag) GROUP BY u.tag")
    )
    await write_stats(conn, [(str(tag), int(df)) for tag, df in rows])
    await conn.execute(text("ANALYZE tag_stats"))


def _where(params: dict[str, Any]) -> str:
    clauses = [FILTER_SQL.get(name) or _SUBSTRING[name] for name in params]
    return "".join(" AND " + c for c in clauses)


async def search(conn: AsyncConnection, plan: SearchPlan) -> list[RowMapping]:
    """One page of scored prospects, each row carrying ``total`` (the match count)."""
    params = plan.filter_params()
    sql = text(_SEARCH.format(digits=SCORE_DIGITS, where=_where(params))).bindparams(_TAGS)
    params.update(
        tags=list(plan.tags), wq=float(plan.query_weight), limit=plan.limit, offset=plan.offset
    )
    result = await conn.execute(sql, params)
    return list(result.mappings())


async def count_matches(conn: AsyncConnection, plan: SearchPlan) -> int:
    """The number of matches regardless of the page (used when the page is empty)."""
    params = plan.filter_params()
    sql = text(f"SELECT COUNT(*) FROM prospects p WHERE p.tags && :tags{_where(params)}")
    params["tags"] = list(plan.tags)
    return int((await conn.execute(sql.bindparams(_TAGS), params)).scalar_one())


def decode_tags(value: Any) -> list[str]:
    """Tags as stored (a ``text[]``) -> a list."""
    return list(value)
