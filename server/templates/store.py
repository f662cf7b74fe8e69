"""Templates in the database: each row belongs to one user; every query filters on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import TemplateRow
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = ["MAX_TEMPLATES", "UNSET", "Template", "TemplateLimitReached", "TemplateStore"]

MAX_TEMPLATES = 1000
"""Templates per user; creating one more is refused (409)."""

UNSET: object = object()
"""Marks a field the caller did not give (``body_html=None`` is a value: no HTML body)."""


class TemplateLimitReached(Exception):
    """The user already holds :data:`MAX_TEMPLATES` templates."""


@dataclass(frozen=True)
class Template:
    """A stored template."""

    id: str
    name: str
    subject: str
    body_text: str
    body_html: str | None
    created_at: float
    updated_at: float


_COLUMNS = (
    TemplateRow.id,
    TemplateRow.name,
    TemplateRow.subject,
    TemplateRow.body_text,
    TemplateRow.body_html,
    TemplateRow.created_at,
    TemplateRow.updated_at,
)


def _template(row: Any) -> Template:
    return Template(*row)


class TemplateStore:
    """Create, read, list (name search), update and delete a user's templates."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, user_id: str, *, name: str, subject: str, body_text: str, body_html: str | None
    ) -> Template:
        """A new template; TemplateLimitReached past the cap."""
        now = time.time()
        template = Template(new_id("tpl"), name, subject, body_text, body_html, now, now)
        async with write_transaction(self.engine) as conn:
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(TemplateRow)
                    .where(TemplateRow.user_id == user_id)
                )
            ).scalar_one()
            if count >= MAX_TEMPLATES:
                raise TemplateLimitReached
            await conn.execute(
                insert(TemplateRow).values(
                    id=template.id,
                    user_id=user_id,
                    name=name,
                    name_key=name.casefold(),
                    subject=subject,
                    body_text=body_text,
                    body_html=body_html,
                    created_at=now,
                    updated_at=now,
                )
            )
        return template

    async def get(self, user_id: str, template_id: str) -> Template | None:
        """The user's template, or None (another user's is None too)."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        TemplateRow.id == template_id, TemplateRow.user_id == user_id
                    )
                )
            ).first()
        return _template(row) if row else None

    async def list(
        self,
        user_id: str,
        *,
        search: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Template]:
        """Newest first; ``search`` matches a case-insensitive part of the name."""
        query = select(*_COLUMNS).where(TemplateRow.user_id == user_id)
        if search:
            query = query.where(TemplateRow.name_key.contains(search.casefold(), autoescape=True))
        query = newest_first(query, TemplateRow.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_template(row) for row in rows]

    async def update(
        self,
        user_id: str,
        template_id: str,
        *,
        name: str | None = None,
        subject: str | None = None,
        body_text: str | None = None,
        body_html: object = UNSET,
    ) -> Template | None:
        """Change the given fields (``body_html=None`` removes the HTML body); None when the
        user has no such template."""
        values: dict[str, object] = {"updated_at": time.time()}
        if name is not None:
            values.update(name=name, name_key=name.casefold())
        if subject is not None:
            values["subject"] = subject
        if body_text is not None:
            values["body_text"] = body_text
        if body_html is not UNSET:
            values["body_html"] = body_html
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(TemplateRow)
                .where(TemplateRow.id == template_id, TemplateRow.user_id == user_id)
                .values(**values)
            )
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        TemplateRow.id == template_id, TemplateRow.user_id == user_id
                    )
                )
            ).first()
        return _template(row) if row else None

    async def delete(self, user_id: str, template_id: str) -> bool:
        """Delete the user's template; False when there was none."""
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                delete(TemplateRow).where(
                    TemplateRow.id == template_id, TemplateRow.user_id == user_id
                )
            )
        return bool(done.rowcount)
