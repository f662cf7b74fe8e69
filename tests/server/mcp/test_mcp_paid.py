"""Wallet-paid tools (x402 over MCP, no account): uvicorn + the app's one x402gw gate + anvil.

The x402 project's MCP pattern: a call without payment is a tool error whose structured content is
the ``PaymentRequired``; the client pays (the official x402 SDK signs) and retries with the
payment in ``_meta["x402/payment"]``; the answer carries the settlement in
``_meta["x402/payment-response"]``. Balances are read from the chain, so "charged once" and "not
charged" are on-chain facts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest_asyncio
from lab.anvil import AnvilChain, dev_account
from lab.stubdns import StubResolver
from mcp import ClientSession
from mcp_support import (
    KEYED_TOOLS,
    PAID_TOOLS,
    UNTRUSTED,
    check_listing,
    error_code,
    mcp_session,
    ok,
    served,
)
from x402 import x402Client
from x402.mcp.types import MCPToolResult
from x402.mcp.utils import attach_payment_to_meta, extract_payment_required_from_result
from x402.mechanisms.evm.exact import ExactEvmScheme

from emailintel.smtp.prober import Prober
from server.app import create_app
from server.payments import gate_factory
from server.settings import load_settings

PAYER_FUNDS = 10_000_000
VALIDATE_PRICE = 3_000
SEARCH_PRICE = 12_000


@dataclass
class Chain:
    """The lab token, the payer's SDK client, and the balances tests check."""

    url: str
    chain: AnvilChain
    token: str
    payer: Any
    merchant: str
    sdk: x402Client

    def balances(self) -> tuple[int, int]:
        return (
            self.chain.balance_of(self.token, self.payer.address),
            self.chain.balance_of(self.token, self.merchant),
        )


@pytest_asyncio.fixture(loop_scope="function")
async def paid(anvil: AnvilChain, tmp_path: Path) -> AsyncIterator[Chain]:
    token = anvil.deploy_token("USD Coin", "2", "USDC").address
    payer, settler = dev_account(8), dev_account(9)
    merchant = dev_account(7).address
    anvil.mint(token, payer.address, PAYER_FUNDS)
    settings = load_settings(
        env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bavlio.sqlite3'}",
        rpc_url=anvil.url,
        network="eip155:31337",
        asset=token,
        pay_to=merchant,
        settler_key="0x" + bytes(settler.key).hex(),
    )
    prober = Prober(helo="probe.verifier-lab.test", mail_from="bounce@verifier-lab.test")
    app = create_app(
        settings,
        payment_middleware=gate_factory(settings),
        resolver=StubResolver(),
        prober=prober,  # never reached here: lists the SMTP tools
    )
    sdk = x402Client()
    sdk.register("eip155:*", ExactEvmScheme(payer))
    limit = {"network": "eip155:31337", "asset": token, "max_amount_per_payment": "100000"}
    sdk.set_spend_controls({"allowed_assets": [limit]})
    async with served(app) as url:
        yield Chain(url, anvil, token, payer, merchant, sdk)


async def _pay(chain: Chain, refused: types.CallToolResult) -> dict[str, Any]:
    """The ``_meta`` of the paid retry, made by the x402 SDK from the tool error."""
    assert refused.is_error
    as_x402 = MCPToolResult(
        content=[c.model_dump() for c in refused.content],
        is_error=True,
        structured_content=refused.structured_content,
    )
    required = extract_payment_required_from_result(as_x402)
    assert required is not None, refused.structured_content
    payload = await chain.sdk.create_payment_payload(required)
    meta: dict[str, Any] = attach_payment_to_meta({}, payload)["_meta"]
    return meta


async def _call(
    session: ClientSession, name: str, args: dict[str, Any], meta: dict[str, Any] | None = None
) -> types.CallToolResult:
    return await session.call_tool(name, args, meta=meta)  # type: ignore[arg-type]


async def test_wallet_tools_are_listed_and_paid_per_call(paid: Chain) -> None:
    async with mcp_session(paid.url) as session:  # no account, no key
        check_listing((await session.list_tools()).tools, KEYED_TOOLS | PAID_TOOLS)
        args = {"email": "not-an-address"}
        refused = await _call(session, "x402_validate_email", args)
        challenge = refused.structured_content
        assert isinstance(challenge, dict)
        assert challenge["x402Version"] == 2
        # the resource is the operation's public URL, as a REST client would be told
        assert challenge["resource"]["url"] == paid.url + "/api/x402/v1/email/validate"
        [accept] = challenge["accepts"]
        assert (accept["network"], accept["asset"], accept["amount"]) == (
            "eip155:31337",
            paid.token,
            str(VALIDATE_PRICE),
        )
        before = paid.balances()
        meta = await _pay(paid, refused)
        answered = await _call(session, "x402_validate_email", args, meta)
        assert ok(answered)["risk_level"] == "invalid"  # answered, so charged
        assert answered.meta is not None
        receipt = answered.meta["x402/payment-response"]
        assert receipt["success"] is True
        assert receipt["payer"] == paid.payer.address
        receipt_tx = paid.chain.rpc("eth_getTransactionReceipt", receipt["transaction"])
        assert int(receipt_tx["status"], 16) == 1
        after = paid.balances()
        assert after == (before[0] - VALIDATE_PRICE, before[1] + VALIDATE_PRICE)

        # the same payment again: never settled twice
        again = await _call(session, "x402_validate_email", args, meta)
        assert paid.balances() == after
        if not again.is_error:
            assert again.structured_content == answered.structured_content


async def test_failed_work_is_not_settled_and_answers_are_enveloped(paid: Chain) -> None:
    async with mcp_session(paid.url) as session:
        refused = await _call(session, "x402_validate_email", {"email": "x@y.test"})
        meta = await _pay(paid, refused)
        before = paid.balances()
        bad = await _call(session, "x402_validate_email", {"email": 5}, meta)
        assert error_code(bad) in {"invalid_body", "parameter_invalid"}
        assert paid.balances() == before  # a refused body is never settled

        refused = await _call(session, "x402_search_leads", {"tags": ["ai"]})
        meta = await _pay(paid, refused)
        found = ok(await _call(session, "x402_search_leads", {"tags": ["ai"]}, meta))
        assert found[UNTRUSTED] is True
        assert found["content"]["data"] == []
        assert paid.balances() == (before[0] - SEARCH_PRICE, before[1] + SEARCH_PRICE)


async def test_a_malformed_payment_is_a_tool_error(paid: Chain) -> None:
    async with mcp_session(paid.url) as session:
        before = paid.balances()
        forged = await _call(
            session, "x402_validate_email", {"email": "a@b.test"}, {"x402/payment": "nope"}
        )
        assert error_code(forged) == "invalid_payment"
        junk = await _call(
            session,
            "x402_validate_email",
            {"email": "a@b.test"},
            {"x402/payment": {"x402Version": 2, "payload": {}}},
        )
        assert junk.is_error
        assert paid.balances() == before
