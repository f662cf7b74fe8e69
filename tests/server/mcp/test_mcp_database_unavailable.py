"""A lost database during a use-case tool call is the REST 503 ``database_unavailable``, not an
``internal_error`` (the same typed failure, the same code over both transports)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from mcp_support import error_code
from pydantic import BaseModel

from server.db.hotpg import DatabaseUnavailable
from server.mcp.registry import Hints, UseCaseTool
from server.mcp.server import McpTools
from server.settings import Settings

READ = Hints(read_only=True, destructive=False, idempotent=True)


class Nothing(BaseModel):
    pass


async def _lost(svc: object, body: Nothing) -> Nothing:
    raise DatabaseUnavailable


TABLE = (
    UseCaseTool(
        "lost",
        "Loses the database.",
        READ,
        Nothing,
        Nothing,
        "credits",
        "email.validate",
        run=_lost,
    ),
)


@pytest_asyncio.fixture(loop_scope="function")
async def runner(sqlite_url: str, tmp_path: Path) -> AsyncIterator[tuple[McpTools, Keyed]]:
    from server.settings import load_settings

    settings: Settings = load_settings(env_file=None, database_url=sqlite_url)
    async with keyed_app(keyed_settings(settings, tmp_path)) as keyed:
        app = keyed.client._transport.app  # type: ignore[attr-defined]
        tools = McpTools(app.state.operations, TABLE, paid=False)
        tools.app = app
        yield tools, keyed


async def test_a_lost_database_is_database_unavailable(runner: tuple[McpTools, Keyed]) -> None:
    tools, keyed = runner
    _, session = await keyed.user(credits=5)
    key = await keyed.key(session)
    creds = [(b"authorization", key["Authorization"].encode())]
    failed = await tools.call("lost", {}, {}, creds, None)
    assert error_code(failed) == "database_unavailable"
    assert "internal" not in json.dumps(failed.structured_content)
