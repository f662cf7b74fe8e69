"""`bavlio mcp`: the same tools on stdio, spoken to by the mcp SDK's stdio client, with the key
from BAVLIO_API_KEY read on every call (a key revoked meanwhile fails the next call)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from keyed_helpers import keyed_app, keyed_settings
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_support import KEYED_TOOLS, check_listing, error_code, ok

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def _server(settings: Settings, key: str, work: Path) -> StdioServerParameters:
    assert settings.secret_file is not None
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "server", "mcp"],
        cwd=work,
        env={
            "PYTHONPATH": str(ROOT),
            "BAVLIO_DATABASE_URL": settings.database_url,
            "BAVLIO_SECRET_FILE": str(settings.secret_file),
            "BAVLIO_STORAGE_DIR": str(work / "files"),
            "BAVLIO_LOG_LEVEL": "warning",
            "BAVLIO_API_KEY": key,
        },
    )


@contextlib.asynccontextmanager
async def _log(work: Path) -> AsyncIterator[TextIO]:
    """The server's stderr, kept in the test's directory."""
    with (work / "mcp.log").open("w") as log:
        yield log


async def test_stdio_lists_and_calls_tools_and_a_revoked_key_fails(
    settings: Settings, tmp_path: Path
) -> None:
    config = keyed_settings(settings, tmp_path)
    async with keyed_app(config) as keyed:
        _, session_headers = await keyed.user(credits=7)
        made = await keyed.client.post(
            "/api/v1/api-keys", json={"name": "stdio"}, headers=session_headers
        )
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        async with (
            _log(tmp_path) as errlog,
            stdio_client(_server(config, key, tmp_path), errlog=errlog) as (read, write),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            listed = await mcp.list_tools()
            # no SMTP identity configured (EMAILINTEL_HELO): the probing tools are left out,
            # as `bavlio serve` leaves out the SMTP routes; no payment gate: no wallet tools
            check_listing(listed.tools, KEYED_TOOLS - {"verify_email", "find_email"})
            balance = ok(await mcp.call_tool("get_credit_balance", {}))
            assert balance["available_credits"] == 7
            replies = ok(await mcp.call_tool("list_replies", {}))
            assert replies["content"]["data"] == []
            revoked = await keyed.client.delete(
                f"/api/v1/api-keys/{key_id}", headers=session_headers
            )
            assert revoked.status_code == 200, revoked.text
            failed = await mcp.call_tool("get_credit_balance", {})
            assert error_code(failed) == "invalid_api_key"


async def test_stdio_without_a_key_answers_missing_credentials(
    settings: Settings, tmp_path: Path
) -> None:
    config = keyed_settings(settings, tmp_path)
    async with (
        keyed_app(config),
        _log(tmp_path) as errlog,
        stdio_client(_server(config, "", tmp_path), errlog=errlog) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()
        failed = await mcp.call_tool("get_credit_balance", {})
        assert error_code(failed) == "missing_credentials"
