"""`bavlio serve` as a real process answers MCP at /mcp: a user and key made by the CLI, tools
listed and called by the mcp SDK's client over Streamable HTTP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from mcp_support import KEYED_TOOLS, check_listing, mcp_session, ok
from processes import run_cli_json, serving_process

from server.cli import main


async def test_bavlio_serve_answers_mcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BAVLIO_", "EMAILINTEL_"))},
        "BAVLIO_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "BAVLIO_KEY_SECRET": "k" * 40,
        "EMAILINTEL_NAMESERVERS": "127.0.0.1:9",  # never asked: the address is malformed
    }
    for name, value in env.items():
        if name.startswith("BAVLIO_"):
            monkeypatch.setenv(name, value)
    config = tmp_path / "bavlio.toml"
    config.write_text("")
    assert await asyncio.to_thread(main, ["migrate", "--config", str(config)]) == 0
    made = await run_cli_json(["users", "create", "mcp@x.test", "--key", "--config", str(config)])
    await run_cli_json(
        ["credits", "grant", made["user_id"], "3", "--reference", "r", "--config", str(config)]
    )
    with serving_process(tmp_path, config, env, tmp_path / "serve.log") as (url, _):
        async with mcp_session(url, made["api_key"]) as session:
            listed = (await session.list_tools()).tools
            # no SMTP identity (EMAILINTEL_HELO), --unpaid: no probing tools, no wallet tools
            check_listing(listed, KEYED_TOOLS - {"verify_email", "find_email"})
            before = ok(await session.call_tool("get_credit_balance", {}))
            assert before["available_credits"] >= 3  # the grant (and the plan's signup credits)
            answered = ok(await session.call_tool("validate_email", {"email": "not-an-address"}))
            assert answered["risk_level"] == "invalid"
            balance = ok(await session.call_tool("get_credit_balance", {}))
            assert balance["available_credits"] == before["available_credits"] - 1
            assert balance["used_credits"] == 1
