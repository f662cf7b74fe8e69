"""The MCP tests' helpers: the app served by uvicorn on loopback in the test's own event loop (so
a test may also use the app's services), and the mcp SDK's client over Streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import mcp_types as types
import uvicorn
from jsonschema import Draft202012Validator
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

UNTRUSTED = "__untrusted_third_party_content"

SEED_HINTS: dict[str, tuple[bool, bool, bool]] = {
    # (readOnlyHint, destructiveHint, idempotentHint): the seed's table, then the additions
    "verify_email": (True, False, True),
    "search_leads": (True, False, True),
    "send_email": (False, False, False),
    "list_replies": (True, False, True),
    "validate_email": (True, False, True),
    "find_email": (True, False, True),
    "find_linkedin_url": (True, False, True),
    "get_credit_balance": (True, False, True),
    "list_campaigns": (True, False, True),
    "create_campaign": (False, False, False),
    "launch_campaign": (False, False, True),
    "pause_campaign": (False, False, True),
    "add_leads_to_campaign": (False, False, False),
    "list_campaign_leads": (True, False, True),
    "preflight_campaign": (True, False, True),
    "approve_lead_email": (False, False, True),
    "get_campaign_stats": (True, False, True),
    "x402_validate_email": (True, False, True),
    "x402_verify_email": (True, False, True),
    "x402_find_email": (True, False, True),
    "x402_find_linkedin_url": (True, False, True),
    "x402_search_leads": (True, False, True),
}
KEYED_TOOLS = frozenset(n for n in SEED_HINTS if not n.startswith("x402_"))
PAID_TOOLS = frozenset(n for n in SEED_HINTS if n.startswith("x402_"))
ENVELOPED = frozenset(
    {
        "list_replies",
        "find_linkedin_url",
        "search_leads",
        "preflight_campaign",
        "launch_campaign",
        "add_leads_to_campaign",
        "list_campaign_leads",
        "approve_lead_email",
    }
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """uvicorn serving ``app`` (its lifespan too) on a free loopback port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def mcp_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialised SDK client session on ``url``/mcp sending ``key`` with every request."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def check_listing(listed: list[types.Tool], expected: frozenset[str]) -> dict[str, types.Tool]:
    """Every expected tool, with the seed's hints and valid object schemas; by name."""
    by_name = {tool.name: tool for tool in listed}
    assert set(by_name) == expected
    for name, tool in by_name.items():
        assert tool.description
        assert tool.annotations is not None
        hints = tool.annotations
        assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint) == SEED_HINTS[
            name
        ], name
        for schema in (tool.input_schema, tool.output_schema):
            assert schema is not None
            assert schema["type"] == "object"
            Draft202012Validator.check_schema(schema)
        assert tool.output_schema is not None
        if name in ENVELOPED or name in {"x402_find_linkedin_url", "x402_search_leads"}:
            assert tool.output_schema["required"] == [UNTRUSTED, "content"]
            assert tool.output_schema["properties"][UNTRUSTED] == {"const": True}
        else:
            assert UNTRUSTED not in tool.output_schema.get("properties", {})
    return by_name


def ok(result: types.CallToolResult) -> dict[str, Any]:
    """The structured answer of a successful call (the SDK client validated it against the
    tool's output schema); its text content is the same JSON."""
    assert not result.is_error, result.structured_content
    data = result.structured_content
    assert isinstance(data, dict)
    [text] = result.content
    assert isinstance(text, types.TextContent)
    assert json.loads(text.text) == data
    return data


def error_code(result: types.CallToolResult) -> str:
    """The REST envelope's code of a failed call (the whole envelope is checked)."""
    assert result.is_error, result.structured_content
    envelope = result.structured_content
    assert isinstance(envelope, Mapping)
    assert set(envelope) == {"error"}
    error = envelope["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    assert error["message"]
    code: str = error["code"]
    return code
