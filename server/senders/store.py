"""Sender profiles and their named prompts in the database.

The five-profile cap and the single default hold under concurrency: every write that counts
profiles or moves the default first locks the user's row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so two creates cannot both
see four profiles and two profiles cannot both become the default. Prompt writes lock their
profile's row the same way.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import SenderProfile, SenderPrompt, User
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = [
    "MAX_PROFILES",
    "MAX_PROMPTS",
    "Profile",
    "ProfileLimitReached",
    "Prompt",
    "PromptExists",
    "PromptLimitReached",
    "SenderStore",
]

MAX_PROFILES = 5
"""Sender profiles per user; the sixth is refused (409)."""
MAX_PROMPTS = 20
"""Named prompts per profile."""


class ProfileLimitReached(Exception):
    """The user already holds :data:`MAX_PROFILES` profiles."""


class PromptLimitReached(Exception):
    """The profile already holds :data:`MAX_PROMPTS` prompts."""


class PromptExists(Exception):
    """The profile already has a prompt of that name."""


@dataclass(frozen=True)
class Profile:
    """A sender profile."""

    id: str
    name: str
    sender_data: dict[str, Any]
    is_default: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Prompt:
    """A named prompt of a profile."""

    name: str
    content: str
    created_at: float
    updated_at: float


_COLUMNS = (
    SenderProfile.id,
    SenderProfile.name,
    SenderProfile.sender_data,
    SenderProfile.is_default,
    SenderProfile.created_at,
    SenderProfile.updated_at,
)
_PROMPT_COLUMNS = (
    SenderPrompt.name,
    SenderPrompt.content,
    SenderPrompt.created_at,
    SenderPrompt.updated_at,
)


def _profile(row: Any) -> Profile:
    return Profile(row[0], row[1], dict(row[2] or {}), bool(row[3]), row[4], row[5])


def _prompt(row: Any) -> Prompt:
    return Prompt(row[0], row[1], row[2], row[3])


async def _lock_user(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(select(User.id).where(User.id == user_id).with_for_update())


async def _lock_profile(conn: AsyncConnection, user_id: str, profile_id: str) -> bool:
    found = await conn.execute(
        select(SenderProfile.id)
        .where(SenderProfile.id == profile_id, SenderProfile.user_id == user_id)
        .with_for_update()
    )
    return found.first() is not None


async def _clear_default(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        update(SenderProfile)
        .where(SenderProfile.user_id == user_id, SenderProfile.is_default.is_(True))
        .values(is_default=False)
    )


class SenderStore:
    """A user's sender profiles (every query filters on the user) and their prompts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, user_id: str, *, name: str, sender_data: dict[str, Any], is_default: bool
    ) -> Profile:
        """A new profile (the default if asked, clearing the old one); ProfileLimitReached
        when the user has :data:`MAX_PROFILES`."""
        now = time.time()
        profile = Profile(new_id("spf"), name, sender_data, is_default, now, now)
        async with write_transaction(self.engine) as conn:
            await _lock_user(conn, user_id)
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(SenderProfile)
                    .where(SenderProfile.user_id == user_id)
                )
            ).scalar_one()
            if count >= MAX_PROFILES:
                raise ProfileLimitReached
            if is_default:
                await _clear_default(conn, user_id)
            await conn.execute(
                insert(SenderProfile).values(
                    id=profile.id,
                    user_id=user_id,
                    name=name,
                    name_key=name.casefold(),
                    sender_data=sender_data,
                    is_default=is_default,
                    created_at=now,
                    updated_at=now,
                )
            )
        return profile

    async def get(self, user_id: str, profile_id: str) -> Profile | None:
        """The user's profile, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        SenderProfile.id == profile_id, SenderProfile.user_id == user_id
                    )
                )
            ).first()
        return _profile(row) if row else None

    async def default(self, user_id: str) -> Profile | None:
        """The user's default profile, if one is set."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        SenderProfile.user_id == user_id, SenderProfile.is_default.is_(True)
                    )
                )
            ).first()
        return _profile(row) if row else None

    async def list(
        self,
        user_id: str,
        *,
        search: str | None = None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Profile]:
        """Newest first; ``search`` matches a case-insensitive part of the name."""
        query = select(*_COLUMNS).where(SenderProfile.user_id == user_id)
        if search:
            query = query.where(SenderProfile.name_key.contains(search.casefold(), autoescape=True))
        query = newest_first(query, SenderProfile.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_profile(row) for row in rows]

    async def update(
        self,
        user_id: str,
        profile_id: str,
        *,
        name: str | None = None,
        sender_data: dict[str, Any] | None = None,
        is_default: bool | None = None,
    ) -> Profile | None:
        """Change the given fields (``sender_data`` is replaced whole); making a profile the
        default clears the old default in the same transaction. None when there is no such
        profile."""
        values: dict[str, Any] = {"updated_at": time.time()}
        if name is not None:
            values.update(name=name, name_key=name.casefold())
        if sender_data is not None:
            values["sender_data"] = sender_data
        if is_default is not None:
            values["is_default"] = is_default
        mine = (SenderProfile.id == profile_id, SenderProfile.user_id == user_id)
        async with write_transaction(self.engine) as conn:
            await _lock_user(conn, user_id)
            if not (await conn.execute(select(SenderProfile.id).where(*mine))).first():
                return None
            if is_default:
                await _clear_default(conn, user_id)
            await conn.execute(update(SenderProfile).where(*mine).values(**values))
            row = (await conn.execute(select(*_COLUMNS).where(*mine))).one()
        return _profile(row)

    async def delete(self, user_id: str, profile_id: str) -> bool:
        """Delete the profile and its prompts; False when there was none."""
        async with write_transaction(self.engine) as conn:
            if not await _lock_profile(conn, user_id, profile_id):
                return False
            await conn.execute(delete(SenderPrompt).where(SenderPrompt.profile_id == profile_id))
            await conn.execute(
                delete(SenderProfile).where(
                    SenderProfile.id == profile_id, SenderProfile.user_id == user_id
                )
            )
        return True

    # --- named prompts: the caller has checked the profile is the user's -----------------

    async def prompts(self, profile_id: str) -> builtins.list[Prompt]:
        """The profile's prompts by name."""
        async with read_connection(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(*_PROMPT_COLUMNS)
                    .where(SenderPrompt.profile_id == profile_id)
                    .order_by(SenderPrompt.name)
                )
            ).all()
        return [_prompt(row) for row in rows]

    async def prompt(self, profile_id: str, name: str) -> Prompt | None:
        """One prompt, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_PROMPT_COLUMNS).where(
                        SenderPrompt.profile_id == profile_id, SenderPrompt.name == name
                    )
                )
            ).first()
        return _prompt(row) if row else None

    async def create_prompt(
        self, user_id: str, profile_id: str, name: str, content: str
    ) -> Prompt | None:
        """A new prompt; None when the profile is gone; PromptExists or PromptLimitReached."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            if not await _lock_profile(conn, user_id, profile_id):
                return None
            names = (
                await conn.execute(
                    select(SenderPrompt.name).where(SenderPrompt.profile_id == profile_id)
                )
            ).scalars()
            held = set(names)
            if name in held:
                raise PromptExists
            if len(held) >= MAX_PROMPTS:
                raise PromptLimitReached
            await conn.execute(
                insert(SenderPrompt).values(
                    profile_id=profile_id,
                    name=name,
                    content=content,
                    created_at=now,
                    updated_at=now,
                )
            )
        return Prompt(name, content, now, now)

    async def update_prompt(self, profile_id: str, name: str, content: str) -> Prompt | None:
        """Replace a prompt's content; None when there is no such prompt."""
        where = (SenderPrompt.profile_id == profile_id, SenderPrompt.name == name)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(SenderPrompt).where(*where).values(content=content, updated_at=time.time())
            )
            row = (await conn.execute(select(*_PROMPT_COLUMNS).where(*where))).first()
        return _prompt(row) if row else None

    async def delete_prompt(self, profile_id: str, name: str) -> bool:
        """Delete a prompt; False when there was none."""
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                delete(SenderPrompt).where(
                    SenderPrompt.profile_id == profile_id, SenderPrompt.name == name
                )
            )
        return bool(done.rowcount)
