"""Prospect pool SQL for SQLite: tags as a JSON array plus ``prospect_tags`` for the pre-filter.

Search ranks candidate ids from ``prospect_tags`` alone (covering indexes both ways) and reads
full rows only for filters and for the requested page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db.models import Prospect, ProspectTag
from server.db.queries.common import FILTER_SQL, SCORE_DIGITS, SearchPlan, write_stats

__all__ = ["count_matches", "decode_tags", "insert_prospects", "refresh_stats", "search"]

_SUBSTRING = {
    "title_key": "instr(p.title_key, :title_key) > 0",
    "location_key": "instr(p.location_key, :location_key) > 0",
}

_SEARCH = """
WITH q(tag, weight) AS (
  SELECT ts.tag, ts.weight FROM tag_stats ts WHERE ts.tag IN (SELECT value FROM json_each(:tags))
),
matched AS (
  SELECT pt.prospect_id AS id, SUM(q.weight) AS inter
  FROM q JOIN prospect_tags pt ON pt.tag = q.tag
  GROUP BY pt.prospect_id
),
ranked AS (
  SELECT m.id, ROUND(m.inter / (:wq - m.inter + (
           SELECT SUM(ts.weight) FROM prospect_tags o JOIN tag_stats ts ON ts.tag = o.tag
           WHERE o.prospect_id = m.id
         )), {digits}) AS score,
         COUNT(*) OVER () AS total
  FROM matched m {filtered}
  ORDER BY score DESC, m.id ASC
  LIMIT :limit OFFSET :offset
)
SELECT p.id, p.name, p.title, p.company, p.domain, p.linkedin_url, p.email, p.location, p.tags,
       r.score, r.total
FROM ranked r JOIN prospects p ON p.id = r.id
ORDER BY r.score DESC, r.id ASC
"""


async def insert_prospects(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert prospects and their (tag, id) pairs; returns how many were inserted."""
    if not rows:
        return 0
    result = await conn.execute(
        insert(Prospect).returning(Prospect.id, sort_by_parameter_order=True), list(rows)
    )
    ids = list(result.scalars())
    pairs = [
        {"tag": tag, "prospect_id": pid}
        for pid, row in zip(ids, rows, strict=True)
        for tag in row["tags"]
    ]
    await conn.execute(insert(ProspectTag), pairs)
    return len(ids)


async def refresh_stats(conn: AsyncConnection) -> None:
    """Recompute document frequencies and weights from ``prospect_tags``."""
    rows = await conn.execute(text("SELECT tag, COUNT(*) FROM prospect_tags GROUP BY tag"))
    await write_stats(conn, [(str(tag), int(df)) for tag, df in rows])


async def search(conn: AsyncConnection, plan: SearchPlan) -> list[RowMapping]:
    """One page of scored prospects, each row carrying ``total`` (the match count)."""
    params = plan.filter_params()
    clauses = [FILTER_SQL.get(name) or _SUBSTRING[name] for name in params]
    filtered = "JOIN prospects p ON p.id = m.id WHERE " + " AND ".join(clauses) if clauses else ""
    sql = _SEARCH.format(digits=SCORE_DIGITS, filtered=filtered)
    params.update(
        tags=json.dumps(list(plan.tags)), wq=plan.query_weight, limit=plan.limit, offset=plan.offset
    )
    result = await conn.execute(text(sql), params)
    return list(result.mappings())


async def count_matches(conn: AsyncConnection, plan: SearchPlan) -> int:
    """The number of matches regardless of the page (used when the page is empty)."""
    params = plan.filter_params()
    clauses = [FILTER_SQL.get(name) or _SUBSTRING[name] for name in params]
    where = " AND " + " AND ".join(clauses) if clauses else ""
    sql = (
        "SELECT COUNT(*) FROM prospects p WHERE p.id IN (SELECT pt.prospect_id FROM prospect_tags pt"
        f" WHERE pt.tag IN (SELECT value FROM json_each(:tags))){where}"
    )
    params["tags"] = json.dumps(list(plan.tags))
    return int((await conn.execute(text(sql), params)).scalar_one())


def decode_tags(value: Any) -> list[str]:
    """Tags as stored (a JSON array string) -> a list."""
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value)
