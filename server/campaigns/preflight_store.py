"""The SQL of launch checks, in one place: counts and the first few leads of each lead-level
finding come from aggregate queries over a campaign's open leads and their derived columns
(:mod:`server.campaigns.lead_index`), so preflight costs a few queries, not per-lead work in
Python. Leads stored before those columns existed (or by a path that did not derive them) are
derived here first, in batches, once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from server.campaigns import lead_index as li
from server.db.models import CampaignLead, Suppression
from server.db.tx import read_connection, write_transaction

__all__ = ["FILL_BATCH", "LeadRow", "PreflightStore", "Summary"]

FILL_BATCH = 2000
"""Leads derived per round when some lack their derived columns."""
_IN_CHUNK = 500
"""Domains per ``IN`` list when picking the first suppressed leads."""

_L = cast(Table, CampaignLead.__table__)
LeadRow = tuple[str, str, Any]
"""(lead id, email, data or detail)."""


@dataclass(frozen=True)
class Summary:
    """A campaign's open leads counted: in all, per verdict, lacking a variable, and not yet
    derived (then :meth:`PreflightStore.fill` runs and the counts are taken again)."""

    total: int
    invalid: int
    risky: int
    lacking: int
    unfilled: int


_UNFILLED = or_(_L.c.verdict.is_(None), _L.c.var_index.is_(None), _L.c.domain.is_(None))


def _lacking(name: str) -> ColumnElement[bool]:
    """The lead renders ``{{name}}`` without a value (:func:`lead_index.lacks` in SQL)."""
    tokens = _L.c.var_index
    return and_(
        not_(tokens.contains(li.filled(name), autoescape=True)),
        or_(
            tokens.contains(li.blank(name), autoescape=True),
            not_(tokens.contains(li.folded(name), autoescape=True)),
        ),
    )


class PreflightStore:
    """Aggregates over one campaign's leads of some statuses (the caller owns the campaign)."""

    def __init__(self, engine: AsyncEngine, campaign_id: str, statuses: Sequence[str]) -> None:
        self.engine = engine
        self.where = and_(_L.c.campaign_id == campaign_id, _L.c.status.in_(list(statuses)))

    async def fill(self, derive: Callable[[Sequence[LeadRow]], list[li.LeadIndex]]) -> int:
        """Derive the columns of leads that lack them (``derive`` maps (id, email, data) rows to
        their index, in order; it runs in a thread); returns how many were filled."""
        done = 0
        statement = (
            update(_L)
            .where(_L.c.id == bindparam("lead_id"))
            .values(
                domain=bindparam("domain"),
                verdict=bindparam("verdict"),
                verdict_detail=bindparam("verdict_detail"),
                var_index=bindparam("var_index"),
            )
        )
        while True:
            query = (
                select(_L.c.id, _L.c.email, _L.c.data)
                .where(self.where, _UNFILLED)
                .order_by(_L.c.id)
                .limit(FILL_BATCH)
            )
            async with read_connection(self.engine) as conn:
                rows: list[LeadRow] = [tuple(r) for r in (await conn.execute(query)).all()]
            if not rows:
                return done
            derived = await asyncio.to_thread(derive, rows)  # CPU: off the loop
            async with write_transaction(self.engine) as conn:
                await conn.execute(
                    statement,
                    [
                        {"lead_id": row[0], **asdict(index)}
                        for row, index in zip(rows, derived, strict=True)
                    ],
                )
            done += len(rows)

    async def summary(self, names: Sequence[str]) -> Summary:
        """All the counts in one pass over the leads (``names``: variables that need a value)."""
        lacking = or_(*(_lacking(name) for name in names)) if names else None
        query = select(
            func.count(),
            func.count(case((_L.c.verdict == "invalid", 1))),
            func.count(case((_L.c.verdict == "risky", 1))),
            func.count(case((lacking, 1))) if lacking is not None else literal(0),
            func.count(case((_UNFILLED, 1))),
        ).where(self.where)
        async with read_connection(self.engine) as conn:
            return Summary(*(int(n) for n in (await conn.execute(query)).one()))

    async def first_with_verdict(self, verdict: str, cap: int) -> list[LeadRow]:
        """The first ``cap`` leads with this verdict, with its detail."""
        query = (
            select(_L.c.id, _L.c.email, _L.c.verdict_detail)
            .where(self.where, _L.c.verdict == verdict)
            .order_by(_L.c.id)
            .limit(cap)
        )
        async with read_connection(self.engine) as conn:
            return [tuple(r) for r in (await conn.execute(query)).all()]

    async def first_lacking(self, names: Sequence[str], cap: int) -> list[LeadRow]:
        """The first ``cap`` leads lacking a value for one of ``names``, with their data."""
        if not names:
            return []
        query = (
            select(_L.c.id, _L.c.email, _L.c.data)
            .where(self.where, or_(*(_lacking(name) for name in names)))
            .order_by(_L.c.id)
            .limit(cap)
        )
        async with read_connection(self.engine) as conn:
            return [tuple(r) for r in (await conn.execute(query)).all()]

    async def suppression_kinds(self, user_id: str) -> set[str]:
        """The kinds of suppression entry the user has (to skip what cannot match)."""
        query = select(Suppression.kind).where(Suppression.user_id == user_id)
        async with read_connection(self.engine) as conn:
            found: set[str] = set()
            for kind in ("email", "domain"):
                row = await conn.execute(query.where(Suppression.kind == kind).limit(1))
                found.update(str(r[0]) for r in row.all())
            return found

    async def domains(self) -> dict[str, int]:
        """Leads per address domain."""
        query = select(_L.c.domain, func.count()).where(self.where).group_by(_L.c.domain)
        async with read_connection(self.engine) as conn:
            return {str(d): int(n) for d, n in (await conn.execute(query)).all()}

    def _own_entry(self, user_id: str) -> ColumnElement[bool]:
        return (
            select(Suppression.id)
            .where(Suppression.user_id == user_id, Suppression.value == _L.c.email)
            .exists()
        )

    async def suppressed_by_address(self, user_id: str) -> dict[str, int]:
        """Leads whose own address the user suppressed, per domain."""
        query = (
            select(_L.c.domain, func.count())
            .where(self.where, self._own_entry(user_id))
            .group_by(_L.c.domain)
        )
        async with read_connection(self.engine) as conn:
            return {str(d): int(n) for d, n in (await conn.execute(query)).all()}

    async def first_suppressed(
        self, user_id: str, domains: Sequence[str], cap: int
    ) -> list[tuple[str, str]]:
        """The first ``cap`` (id, email) of leads suppressed by their own address or with a
        domain in ``domains``."""
        queries = [select(_L.c.id, _L.c.email).where(self.where, self._own_entry(user_id))]
        queries += [
            select(_L.c.id, _L.c.email).where(
                self.where, _L.c.domain.in_(list(domains[i : i + _IN_CHUNK]))
            )
            for i in range(0, len(domains), _IN_CHUNK)
        ]
        found: dict[str, str] = {}
        async with read_connection(self.engine) as conn:
            for query in queries:
                rows = await conn.execute(query.order_by(_L.c.id).limit(cap))
                found.update((str(i), str(e)) for i, e in rows.all())
        return sorted(found.items())[:cap]
