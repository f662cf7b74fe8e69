"""The keyed API under test: an app on SQLite or PostgreSQL, session tokens, users with keys."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lab.stubdns import StubResolver

from server.app import create_app
from server.auth.sessions import issue_session_jwt
from server.billing.credit_rules import EntryKind
from server.services import Services
from server.settings import Settings, load_settings

JWT_SECRET = "j" * 40


def keyed_settings(base: Settings, tmp_path: Path, **overrides: Any) -> Settings:
    """``base`` (its database) with a fixed session secret and the master secret in tmp."""
    values: dict[str, Any] = {
        "database_url": base.database_url,
        "database_schema": base.database_schema,
        "jwt_secret": JWT_SECRET,
        "secret_file": tmp_path / "bavlio.secret",
        "storage_dir": tmp_path / "files",  # stored files stay in the test's directory
        "embedded_worker": True,  # jobs run in the app on PostgreSQL too
        "job_poll_seconds": 0.05,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass
class Keyed:
    """A running keyed app: its client and services, and helpers to make callers."""

    client: httpx.AsyncClient
    services: Services
    settings: Settings
    _count: int = field(default=0)

    def session(self, subject: str, *, plan: str | None = None) -> dict[str, str]:
        """Headers of a session token for ``subject``."""
        token = issue_session_jwt(
            JWT_SECRET.encode(), subject, email=f"{subject}@x.test", plan=plan
        )
        return {"Authorization": f"Bearer {token}"}

    async def user(self, *, plan: str = "paid", credits: int = 0) -> tuple[str, dict[str, str]]:
        """A fresh user (id, session headers) with ``credits`` granted."""
        self._count += 1
        headers = self.session(f"user-{self._count}", plan=plan)
        me = await self.client.get("/api/v1/auth/me", headers=headers)
        assert me.status_code == 200, me.text
        user_id: str = me.json()["user_id"]
        if credits:
            await self.services.keyed.credits.add(
                user_id,
                credits,
                kind=EntryKind.GRANT,
                reference=f"test-{self._count}",
                operation="grant",
            )
        return user_id, headers

    async def key(self, session: dict[str, str], scopes: list[str] | None = None) -> dict[str, str]:
        """Headers of a new API key of the session's user."""
        body: dict[str, Any] = {"name": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        made = await self.client.post("/api/v1/api-keys", json=body, headers=session)
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['key']}"}


@contextlib.asynccontextmanager
async def keyed_app(settings: Settings, **app_kwargs: Any) -> AsyncIterator[Keyed]:
    """Run the app's lifespan; yield a :class:`Keyed`."""
    app = create_app(settings, resolver=app_kwargs.pop("resolver", StubResolver()), **app_kwargs)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bavlio.test") as client,
    ):
        yield Keyed(client, app.state.services, settings)


async def wait_for_job(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], *, seconds: float = 60.0
) -> dict[str, Any]:
    """Poll a job's status URL until it is terminal (a bound, not a timing assertion)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        assert loop.time() < deadline, f"job still {body['status']} after {seconds} s"
        await asyncio.sleep(0.05)
