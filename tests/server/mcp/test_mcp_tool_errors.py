"""Error paths of tool calls, on the tool runner bound to a running app (in process): a missing
path argument, another user's id (404, as REST), oversized arguments, an unexpected failure
(an envelope without internals), an Idempotency-Key passed in ``_meta``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from mcp_support import error_code, ok
from pydantic import BaseModel

from server.mcp.registry import Hints, RouteTool, UseCaseTool
from server.mcp.server import IDEMPOTENCY_META, RATE_META, McpTools
from server.services import Services
from server.settings import Settings

READ = Hints(read_only=True, destructive=False, idempotent=True)


class Nothing(BaseModel):
    pass


async def _explode(svc: Services, body: Nothing) -> Nothing:
    raise RuntimeError("secret detail: postgres://user:pw@db")


TABLE = (
    RouteTool("get_inbound", "bavimail_inbound_get", "One inbound email.", READ, untrusted=True),
    RouteTool("estimate", "credits_estimate", "An estimate.", READ),
    UseCaseTool(
        "explode", "Fails.", READ, Nothing, Nothing, "credits", "email.validate", run=_explode
    ),
)


@pytest_asyncio.fixture(loop_scope="function")
async def runner(
    backend_settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[McpTools, Keyed]]:
    async with keyed_app(keyed_settings(backend_settings, tmp_path)) as keyed:
        app = keyed.client._transport.app  # type: ignore[attr-defined]
        tools = McpTools(app.state.operations, TABLE, paid=False)
        tools.app = app
        yield tools, keyed


async def _key(keyed: Keyed, credits: int = 0) -> list[tuple[bytes, bytes]]:
    _, session = await keyed.user(credits=credits)
    key = await keyed.key(session)
    return [(b"authorization", key["Authorization"].encode())]


async def test_error_paths_carry_the_rest_codes(runner: tuple[McpTools, Keyed]) -> None:
    tools, keyed = runner
    creds = await _key(keyed, credits=5)
    missing = await tools.call("get_inbound", {}, {}, creds, None)
    assert error_code(missing) == "parameter_missing"
    other = await tools.call("get_inbound", {"email_id": "inb_" + "0" * 26}, {}, creds, None)
    assert error_code(other) == "inbound_email_not_found"
    assert "../" not in json.dumps(other.structured_content)
    sneaky = await tools.call("get_inbound", {"email_id": "../../credits/balance"}, {}, creds, None)
    # percent-quoted into one segment: the same route, refusing the id, never another route
    assert error_code(sneaky) == "inbound_email_not_found"
    huge = await tools.call("estimate", {"x": "a" * 2_000_000}, {}, creds, None)
    assert error_code(huge) == "arguments_too_large"
    failed = await tools.call("explode", {}, {}, creds, None)
    assert error_code(failed) == "internal_error"
    assert "secret" not in json.dumps(failed.structured_content)
    assert error_code(await tools.call("nope", {}, {}, creds, None)) == "tool_not_found"
    balance = await keyed.client.get(
        "/api/v1/credits/balance", headers={"Authorization": creds[0][1].decode()}
    )
    assert balance.json()["available_credits"] == 5  # failed work is not charged


async def test_idempotency_key_in_meta_reaches_the_route(runner: tuple[McpTools, Keyed]) -> None:
    tools, keyed = runner
    creds = await _key(keyed)
    args = {"operation": "email.validate", "count": 3}
    meta = {IDEMPOTENCY_META: "mcp-key-1"}
    first = ok(await tools.call("estimate", args, meta, creds, None))
    again = ok(await tools.call("estimate", args, meta, creds, None))
    assert again == first
    reused = await tools.call("estimate", {**args, "count": 4}, meta, creds, None)
    assert error_code(reused) == "idempotency_key_reused"


async def test_rate_limits_and_plans_apply_as_on_rest(tmp_path: Path, settings: Settings) -> None:
    from server.mcp.tools import TOOLS

    plans = {"paid": {"rate_limit": "3/minute", "denied": ["prospects.search"]}}
    async with keyed_app(keyed_settings(settings, tmp_path, plans=plans)) as keyed:
        app = keyed.client._transport.app  # type: ignore[attr-defined]
        tools = McpTools(app.state.operations, TOOLS, paid=False)
        tools.app = app
        creds = await _key(keyed, credits=10)
        first = await tools.call("get_credit_balance", {}, {}, creds, None)
        ok(first)
        assert first.meta is not None
        assert first.meta[RATE_META]["limit"] == 3
        assert first.meta[RATE_META]["remaining"] == 2
        denied = await tools.call("search_leads", {"tags": ["ai"]}, {}, creds, None)
        assert error_code(denied) == "plan_forbidden"
        for _ in range(2):  # a refusal by the plan comes before the count, as on REST
            ok(await tools.call("get_credit_balance", {}, {}, creds, None))
        limited = await tools.call("get_credit_balance", {}, {}, creds, None)
        assert error_code(limited) == "rate_limited"
        assert limited.meta is not None
        assert limited.meta[RATE_META]["remaining"] == 0
        assert limited.meta[RATE_META]["retry_after"] >= 1
        also = await tools.call("verify_email", {"email": "a@b.test"}, {}, creds, None)
        assert error_code(also) == "rate_limited"  # one limit per key, REST and MCP alike
