"""The prospect pool over a :class:`~server.db.Database`: bulk add and ranked search."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from server.db.engine import Database
from server.db.models import Prospect
from server.db.queries import for_dialect
from server.db.queries.common import SearchPlan, load_weights, pool_size
from server.prospects.models import (
    ProspectIn,
    ProspectOut,
    SearchRequest,
    SearchResponse,
    casefold_key,
)
from server.prospects.ranking import SCORE_DIGITS, idf

__all__ = ["ProspectStore"]

BATCH = 1000


def _row(prospect: ProspectIn, now: datetime) -> dict[str, Any]:
    return {
        "name": prospect.name,
        "title": prospect.title,
        "company": prospect.company,
        "domain": prospect.domain,
        "linkedin_url": prospect.linkedin_url,
        "email": prospect.email,
        "location": prospect.location,
        "tags": list(prospect.tags),
        "company_key": casefold_key(prospect.company),
        "title_key": casefold_key(prospect.title),
        "location_key": casefold_key(prospect.location),
        "created_at": now,
    }


class ProspectStore:
    """Adds prospects (refreshing tag weights in the same transaction) and searches them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.queries = for_dialect(db.dialect)

    async def add(self, prospects: Sequence[ProspectIn]) -> int:
        """Insert prospects in one transaction and recompute tag weights; returns the count."""
        now = datetime.now(UTC)
        inserted = 0
        async with self.db.engine.begin() as conn:
            for start in range(0, len(prospects), BATCH):
                rows = [_row(p, now) for p in prospects[start : start + BATCH]]
                inserted += await self.queries.insert_prospects(conn, rows)
            await self.queries.refresh_stats(conn)
        return inserted

    async def refresh(self) -> None:
        """Recompute tag weights (after loading rows by other means, e.g. COPY)."""
        async with self.db.engine.begin() as conn:
            await self.queries.refresh_stats(conn)

    def plan(self, request: SearchRequest, weights: dict[str, float], n: int) -> SearchPlan:
        """Turn a validated request into the backend-neutral plan the SQL consumes."""
        filters = request.filters
        unknown = idf(0, n)
        return SearchPlan(
            tags=request.tags,
            query_weight=sum(weights.get(t, unknown) for t in request.tags),
            limit=request.limit,
            offset=request.offset,
            company_key=casefold_key(filters.company) if filters else None,
            domain=filters.domain.lower() if filters and filters.domain else None,
            title_key=casefold_key(filters.title) if filters else None,
            location_key=casefold_key(filters.location) if filters else None,
        )

    async def domain_for_company(self, company: str) -> str | None:
        """The domain most of the pool's rows at ``company`` (case-folded) carry, if any."""
        key = casefold_key(company)
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(Prospect.domain, func.count())
                    .where(Prospect.company_key == key, Prospect.domain.is_not(None))
                    .group_by(Prospect.domain)
                    .order_by(func.count().desc(), Prospect.domain)
                    .limit(1)
                )
            ).first()
        return row[0] if row else None

    async def person(self, name: str, domain: str) -> ProspectOut | None:
        """A pool row for ``name`` (case-insensitive) at ``domain`` that has an email."""
        query = (
            select(*Prospect.__table__.columns)
            .where(
                Prospect.domain == domain,
                func.lower(Prospect.name) == name.lower(),
                Prospect.email.is_not(None),
            )
            .order_by(Prospect.id)
            .limit(1)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        tags = self.queries.decode_tags(row.tags)
        return ProspectOut(
            id=row.id,
            name=row.name,
            title=row.title,
            company=row.company,
            domain=row.domain,
            linkedin_url=row.linkedin_url,
            email=row.email,
            location=row.location,
            tags=tags,
            score=0.0,
            matched_tags=[],
        )

    async def search(self, request: SearchRequest) -> SearchResponse:
        """Prospects sharing at least one tag, best weighted-Jaccard score first, ties by id."""
        async with self.db.engine.connect() as conn:
            n = await pool_size(conn)
            plan = self.plan(request, await load_weights(conn, request.tags), n)
            rows = await self.queries.search(conn, plan)
            if rows:
                total = int(rows[0]["total"])
            elif plan.offset:
                total = await self.queries.count_matches(conn, plan)
            else:
                total = 0
        data = []
        for row in rows:
            tags = self.queries.decode_tags(row["tags"])
            owned = set(tags)
            data.append(
                ProspectOut(
                    id=int(row["id"]),
                    name=row["name"],
                    title=row["title"],
                    company=row["company"],
                    domain=row["domain"],
                    linkedin_url=row["linkedin_url"],
                    email=row["email"],
                    location=row["location"],
                    tags=tags,
                    score=round(float(row["score"]), SCORE_DIGITS),
                    matched_tags=[t for t in request.tags if t in owned],
                )
            )
        return SearchResponse(
            data=data,
            total=total,
            limit=request.limit,
            offset=request.offset,
            has_more=request.offset + len(data) < total,
        )
