"""Buying credits with a wallet over real HTTP: uvicorn + the x402 gate + anvil, on SQLite and
PostgreSQL. "Charged" is the payer's token balance on the chain; "booked" the credit ledger."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from conftest import serving
from eth_account import Account
from eth_account.signers.local import LocalAccount
from keyed_helpers import JWT_SECRET, keyed_settings
from lab.anvil import AnvilChain, dev_account
from lab.stubdns import StubResolver
from lab.webserver import UvicornThread
from sqlalchemy import delete, insert, select
from starlette.applications import Starlette
from starlette.routing import Mount
from tests_server_helpers import assert_envelope

from server.app import create_app
from server.auth.sessions import issue_session_jwt
from server.billing.credits import CreditStore
from server.billing.purchases import recover_purchases
from server.cli import main
from server.db.engine import Database
from server.db.models import CreditAccount, CreditEntry
from server.payclient import choose_offer, sign_offer
from server.payments import gate_factory
from server.settings import Settings, load_settings
from x402gw.ledger import Ledger, State
from x402gw.wire import (
    PAYMENT_RESPONSE,
    decode_payment_required,
    decode_settle_response,
    encode_payment_payload,
)

PURCHASE = "/api/v1/credits/purchase"
PRICE = 1_000_000  # $1.00 at 6 decimals: the default credits.purchase price
PACK = 100


@pytest.fixture(scope="module")
def token(anvil: AnvilChain) -> str:
    return anvil.deploy_token("USD Coin", "2", "USDC").address


@dataclass
class Shop:
    """The running server, its settings, and the chain and ledger facts tests check."""

    url: str
    settings: Settings
    chain: AnvilChain
    token: str
    merchant: str
    count: int = 0

    def session(self, *, plan: str = "free") -> dict[str, str]:
        """A new user's session headers (free plan: anyone may buy credits)."""
        self.count += 1
        jwt = issue_session_jwt(JWT_SECRET.encode(), f"buyer-{self.count}", plan=plan)
        return {"Authorization": f"Bearer {jwt}"}

    def payer(self, funds: int = 5 * PRICE) -> LocalAccount:
        """A fresh wallet holding ``funds`` token units."""
        account: LocalAccount = Account.create()
        self.chain.mint(self.token, account.address, funds)
        return account

    def funds(self, account: LocalAccount) -> int:
        return self.chain.balance_of(self.token, account.address)

    async def payment(self, http: httpx.AsyncClient, auth: dict[str, str], payer: Any) -> str:
        """A signed PAYMENT-SIGNATURE for the offer the server makes to ``auth``."""
        first = await http.post(PURCHASE, json={}, headers=auth)
        assert first.status_code == 402, first.text
        required = decode_payment_required(first.headers["payment-required"])
        offer = choose_offer(required.accepts, PRICE)
        key = "0x" + bytes(payer.key).hex().removeprefix("0x")
        return encode_payment_payload(sign_offer(offer, key, required.resource))

    async def entries(self, user: str) -> list[tuple[str, int, str]]:
        """The user's purchase lines (kind, amount, reference), read from the database."""
        db = Database(self.settings.database_url, schema=self.settings.database_schema)
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(
                    select(CreditEntry.kind, CreditEntry.amount, CreditEntry.reference).where(
                        CreditEntry.user_id == user, CreditEntry.kind == "purchase"
                    )
                )
                return [(r.kind, r.amount, r.reference) for r in rows]
        finally:
            await db.dispose()

    async def gate_records(self) -> list[Any]:
        ledger = Ledger(self.settings.database_url, schema=self.settings.database_schema)
        try:
            return await ledger.records()
        finally:
            await ledger.close()


def _settings(base: Settings, tmp_path: Path, anvil: AnvilChain, token: str) -> Settings:
    return keyed_settings(
        base,
        tmp_path,
        network="eip155:31337",
        asset=token,
        pay_to="0x" + os.urandom(20).hex(),
        settler_key="0x" + bytes(dev_account(3).key).hex().removeprefix("0x"),
        rpc_url=anvil.url,
    )


def _app(settings: Settings) -> Any:
    return create_app(settings, payment_middleware=gate_factory(settings), resolver=StubResolver())


@pytest.fixture
def shop(
    backend_settings: Settings, tmp_path: Path, anvil: AnvilChain, token: str
) -> Iterator[Shop]:
    settings = _settings(backend_settings, tmp_path, anvil, token)
    assert settings.pay_to is not None
    with UvicornThread(_app(settings)) as server:
        yield Shop(server.url, settings, anvil, token, settings.pay_to)


@pytest_asyncio.fixture(loop_scope="function")
async def http(shop: Shop) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shop.url, timeout=60) as client:
        yield client


async def _user(http: httpx.AsyncClient, auth: dict[str, str]) -> str:
    me = await http.get("/api/v1/auth/me", headers=auth)
    assert me.status_code == 200, me.text
    user: str = me.json()["user_id"]
    return user


async def _balance(http: httpx.AsyncClient, auth: dict[str, str]) -> int:
    response = await http.get("/api/v1/credits/balance", headers=auth)
    assert response.status_code == 200, response.text
    total: int = response.json()["total_credits"]
    return total


async def test_paying_once_books_the_pack_once(shop: Shop, http: httpx.AsyncClient) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    before = await _balance(http, auth)  # the free plan's signup credits
    payer = shop.payer()
    header = await shop.payment(http, auth, payer)
    paid = await http.post(PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header})
    assert paid.status_code == 200, paid.text
    body = paid.json()
    receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
    assert receipt.success is True
    assert receipt.payer.lower() == payer.address.lower()
    tx = shop.chain.rpc("eth_getTransactionReceipt", receipt.transaction)
    assert int(tx["status"], 16) == 1
    assert body["credits_added"] == PACK
    assert body["total_credits"] == body["available_credits"] == before + PACK
    assert body["price_usd"] == "1.00"
    assert body["payer"].lower() == payer.address.lower()
    assert body["booked_now"] is True
    assert shop.funds(payer) == 4 * PRICE
    assert shop.chain.balance_of(shop.token, shop.merchant) == PRICE
    assert await shop.entries(user) == [("purchase", PACK, body["reference"])]
    assert "X-RateLimit-Limit" in paid.headers  # the keyed guard's headers on the gate's answer
    # The same payment again: the gate replays the stored answer; nothing is booked or paid.
    again = await http.post(PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header})
    assert again.status_code == 200, again.text
    assert again.json() == body
    assert await shop.entries(user) == [("purchase", PACK, body["reference"])]
    assert await _balance(http, auth) == before + PACK
    assert shop.funds(payer) == 4 * PRICE
    # An API key of the same user buys for the same account.
    made = await http.post("/api/v1/api-keys", json={"name": "agent"}, headers=auth)
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    second = await shop.payment(http, key, payer)
    bought = await http.post(PURCHASE, headers={**key, "PAYMENT-SIGNATURE": second})  # no body
    assert bought.status_code == 200, bought.text
    assert bought.json()["total_credits"] == before + 2 * PACK
    assert len(await shop.entries(user)) == 2
    assert shop.funds(payer) == 3 * PRICE
    # Recovery derives the same references from the gate's records: nothing left to book.
    assert await _recover(shop.settings) == 0
    assert len(await shop.entries(user)) == 2


async def test_another_account_cannot_reuse_a_payment(shop: Shop, http: httpx.AsyncClient) -> None:
    owner, other = shop.session(), shop.session()
    owner_id, other_id = await _user(http, owner), await _user(http, other)
    payer = shop.payer()
    header = await shop.payment(http, owner, payer)
    paid = await http.post(PURCHASE, json={}, headers={**owner, "PAYMENT-SIGNATURE": header})
    assert paid.status_code == 200, paid.text
    stolen = await http.post(PURCHASE, json={}, headers={**other, "PAYMENT-SIGNATURE": header})
    assert stolen.status_code == 402  # another request for this authorization: never replayed
    assert stolen.json()["code"] == "authorization_in_use"
    assert str(owner_id) not in stolen.text
    assert await shop.entries(other_id) == []
    assert len(await shop.entries(owner_id)) == 1
    assert shop.funds(payer) == 4 * PRICE


async def test_unauthenticated_is_refused_before_payment(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    payer = shop.payer()
    header = await shop.payment(http, auth, payer)
    for headers in (
        {"PAYMENT-SIGNATURE": header},
        {"PAYMENT-SIGNATURE": header, "Authorization": "Bearer bav_live_not_a_key"},
        {"X-PAYMENT": header, "Authorization": "Bearer not.a.jwt"},
    ):
        refused = await http.post(PURCHASE, json={}, headers=headers)
        assert_envelope(refused, 401, "authentication_error", refused.json()["error"]["code"])
        assert PAYMENT_RESPONSE not in refused.headers
    assert shop.funds(payer) == 5 * PRICE
    assert await shop.gate_records() == []  # the gate never saw the payment
    # Through the paid mount, the handler is not reachable at all (no way around the guard).
    around = await http.post(
        "/api/x402/v1" + PURCHASE, json={}, headers={"PAYMENT-SIGNATURE": header}
    )
    assert_envelope(around, 404, "invalid_request_error", "route_not_found")
    assert shop.funds(payer) == 5 * PRICE
    assert await shop.gate_records() == []
    # The payment was good all along: with credentials it buys the pack.
    paid = await http.post(PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header})
    assert paid.status_code == 200, paid.text
    assert len(await shop.entries(user)) == 1


async def test_revoked_key_and_refused_requests_cost_nothing(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    made = (await http.post("/api/v1/api-keys", json={"name": "old"}, headers=auth)).json()
    key = {"Authorization": f"Bearer {made['key']}"}
    narrow = await http.post(
        "/api/v1/api-keys", json={"name": "narrow", "scopes": ["credits:read"]}, headers=auth
    )
    narrow_key = {"Authorization": f"Bearer {narrow.json()['key']}"}
    payer = shop.payer()
    header = await shop.payment(http, key, payer)
    revoked = await http.delete(f"/api/v1/api-keys/{made['id']}", headers=auth)
    assert revoked.status_code == 200, revoked.text
    refused = await http.post(PURCHASE, json={}, headers={**key, "PAYMENT-SIGNATURE": header})
    assert_envelope(refused, 401, "authentication_error", "invalid_api_key")
    scoped = await http.post(PURCHASE, json={}, headers={**narrow_key, "PAYMENT-SIGNATURE": header})
    assert_envelope(scoped, 403, "permission_error", "insufficient_scope")
    bad_body = await http.post(
        PURCHASE, json={"credits": 10**6}, headers={**auth, "PAYMENT-SIGNATURE": header}
    )
    assert_envelope(bad_body, 400, "invalid_request_error", bad_body.json()["error"]["code"])
    assert shop.funds(payer) == 5 * PRICE
    assert await shop.gate_records() == []
    assert await shop.entries(user) == []


async def test_concurrent_submits_of_one_payment_book_once(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    before = await _balance(http, auth)
    payer = shop.payer()
    header = await shop.payment(http, auth, payer)
    headers = {**auth, "PAYMENT-SIGNATURE": header}
    answers = await asyncio.gather(
        *(http.post(PURCHASE, json={}, headers=headers) for _ in range(6))
    )
    statuses = sorted(a.status_code for a in answers)
    assert 200 in statuses, [a.text for a in answers]
    assert set(statuses) <= {200, 402, 409}, [a.text for a in answers]
    assert len(await shop.entries(user)) == 1
    assert await _balance(http, auth) == before + PACK
    assert shop.funds(payer) == 4 * PRICE
    settled = [r for r in await shop.gate_records() if r.state is State.SETTLED]
    assert len(settled) == 1


async def _recover(settings: Settings) -> int:
    """Run the start-up recovery on the server's database; the number of purchases it booked."""
    ledger = Ledger(settings.database_url, schema=settings.database_schema)
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        return await recover_purchases(ledger, CreditStore(db.engine))
    finally:
        await ledger.close()
        await db.dispose()


async def _break_account(settings: Settings, user: str) -> int:
    """Delete the user's credit account row (booking then fails); its balance."""
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.engine.begin() as conn:
            balance = (
                await conn.execute(
                    select(CreditAccount.balance).where(CreditAccount.user_id == user)
                )
            ).scalar_one()
            await conn.execute(delete(CreditAccount).where(CreditAccount.user_id == user))
        return int(balance)
    finally:
        await db.dispose()


async def _mend_account(settings: Settings, user: str, balance: int) -> None:
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(CreditAccount).values(user_id=user, balance=balance, held=0))
    finally:
        await db.dispose()


async def test_a_booking_that_failed_after_settlement_is_made_by_a_repeat(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    payer = shop.payer()
    header = await shop.payment(http, auth, payer)
    headers = {**auth, "PAYMENT-SIGNATURE": header}
    balance = await _break_account(shop.settings, user)
    failed = await http.post(PURCHASE, json={}, headers=headers)
    assert_envelope(failed, 503, "api_error", "purchase_not_booked")
    assert decode_settle_response(failed.headers[PAYMENT_RESPONSE]).success is True
    assert shop.funds(payer) == 4 * PRICE  # paid, not yet booked
    assert await shop.entries(user) == []
    await _mend_account(shop.settings, user, balance)
    repeat = await http.post(PURCHASE, json={}, headers=headers)
    assert repeat.status_code == 503  # the gate replays the answer it kept ...
    assert len(await shop.entries(user)) == 1  # ... and the entry books the settled payment
    assert await _balance(http, auth) == balance + PACK
    await http.post(PURCHASE, json={}, headers=headers)
    assert len(await shop.entries(user)) == 1
    assert shop.funds(payer) == 4 * PRICE


async def _as_if_the_handler_died(settings: Settings) -> None:
    """Put the gate's settled records back in the state a process dying inside the upfront
    handler leaves: settled, claimed by a run (status 102), no answer kept."""
    from x402gw.ledger._sql import SqlStore
    from x402gw.ledger._statements import payments
    from x402gw.ledger.rules import CLAIMED_STATUS

    store = SqlStore(settings.database_url, settings.database_schema)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(
                payments.update()
                .where(payments.c.state == State.SETTLED.value)
                .values(response_status=CLAIMED_STATUS, response_headers=None, response_body=None)
            )
    finally:
        await store.close()


async def test_a_crash_between_settlement_and_booking_is_booked_by_a_repeat(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    auth = shop.session()
    user = await _user(http, auth)
    payer = shop.payer()
    header = await shop.payment(http, auth, payer)
    headers = {**auth, "PAYMENT-SIGNATURE": header}
    balance = await _break_account(shop.settings, user)
    assert (await http.post(PURCHASE, json={}, headers=headers)).status_code == 503
    await _mend_account(shop.settings, user, balance)
    await _as_if_the_handler_died(shop.settings)
    repeat = await http.post(PURCHASE, json={}, headers=headers)
    # The dead run's claim is younger than any handler run: the gate refuses to run it twice ...
    assert repeat.status_code == 402
    assert repeat.json()["code"] == "authorization_in_use"
    # ... and the entry has booked the settled payment from the gate's record meanwhile.
    assert len(await shop.entries(user)) == 1
    assert await _balance(http, auth) == balance + PACK
    assert shop.funds(payer) == 4 * PRICE


async def test_startup_recovers_settled_purchases_not_booked(
    backend_settings: Settings, tmp_path: Path, anvil: AnvilChain, token: str
) -> None:
    settings = _settings(backend_settings, tmp_path, anvil, token)
    shop = Shop("", settings, anvil, token, settings.pay_to or "")
    payer = shop.payer()
    auth = shop.session()
    with UvicornThread(_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            user = await _user(http, auth)
            header = await shop.payment(http, auth, payer)
            balance = await _break_account(settings, user)
            failed = await http.post(
                PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header}
            )
            assert failed.status_code == 503, failed.text
    await _mend_account(settings, user, balance)
    assert await shop.entries(user) == []
    app = _app(settings)  # a restart: the lifespan books what was settled and not booked
    async with serving(app) as client:
        after = await client.get("/api/v1/credits/balance", headers=auth)
        assert after.json()["total_credits"] == balance + PACK
    entries = await shop.entries(user)
    assert [(kind, amount) for kind, amount, _ in entries] == [("purchase", PACK)]
    assert await _recover(settings) == 0  # once only
    assert shop.funds(payer) == 4 * PRICE


def test_bavlio_pay_buys_credits_with_an_api_key(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = shop.session()
    with httpx.Client(base_url=shop.url, timeout=60) as http:
        made = http.post("/api/v1/api-keys", json={"name": "agent"}, headers=auth)
        key = made.json()["key"]
        before = http.get("/api/v1/credits/balance", headers=auth).json()["total_credits"]
    payer = shop.payer()
    monkeypatch.setenv("BAVLIO_PAYER_KEY", "0x" + bytes(payer.key).hex().removeprefix("0x"))
    url = shop.url + PURCHASE
    assert main(["pay", "POST", url]) == 1  # no credentials: refused before any payment
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["code"] == "missing_credentials"
    assert json.loads(err) == {"paid": False, "status": 401}
    assert main(["pay", "-H", "Authorization", "POST", url]) == 2
    assert "not a header" in capsys.readouterr().err
    assert shop.funds(payer) == 5 * PRICE
    assert main(["pay", "-H", f"Authorization: Bearer {key}", "POST", url, "{}"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["total_credits"] == before + PACK
    receipt = json.loads(err.strip().splitlines()[-1])
    assert receipt["paid"] is True
    assert receipt["amount"] == str(PRICE)
    assert shop.funds(payer) == 4 * PRICE


@pytest.mark.parametrize("where", ["root_path", "mounted"])
async def test_buying_under_a_root_path_or_a_mount(
    backend_settings: Settings, tmp_path: Path, anvil: AnvilChain, token: str, where: str
) -> None:
    settings = _settings(backend_settings, tmp_path, anvil, token)
    shop = Shop("", settings, anvil, token, settings.pay_to or "")
    app = _app(settings)
    served = (
        UvicornThread(app, root_path="/svc")
        if where == "root_path"
        else UvicornThread(
            Starlette(
                routes=[Mount("/svc", app=app)],
                lifespan=lambda _: app.router.lifespan_context(app),  # a Mount runs none
            )
        )
    )
    prefix = "" if where == "root_path" else "/svc"
    auth = shop.session()
    payer = shop.payer()
    with served as server:
        async with httpx.AsyncClient(base_url=server.url + prefix, timeout=60) as http:
            user = await _user(http, auth)
            unpaid = await http.post(PURCHASE, json={}, headers=auth)
            assert unpaid.status_code == 402, unpaid.text
            anonymous = await http.post(PURCHASE, json={}, headers={"PAYMENT-SIGNATURE": "x"})
            assert anonymous.status_code == 401
            header = await shop.payment(http, auth, payer)
            paid = await http.post(PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header})
            assert paid.status_code == 200, paid.text
            assert paid.json()["credits_added"] == PACK
            around = await http.post(
                "/api/x402/v1" + PURCHASE, json={}, headers={**auth, "PAYMENT-SIGNATURE": header}
            )
            assert around.status_code == 404
    assert len(await shop.entries(user)) == 1
    assert shop.funds(payer) == 4 * PRICE
    records = await shop.gate_records()
    assert [r.resource.split("?")[0] for r in records] == [f"POST /svc{PURCHASE}"]


async def test_one_payment_sent_to_two_servers_books_once(
    pg_schema: tuple[str, str], tmp_path: Path, anvil: AnvilChain, token: str
) -> None:
    """Two servers (two gates, as two processes would have) on one PostgreSQL: the same
    payment submitted to both at once settles once and books once."""
    url, schema = pg_schema
    base = load_settings(env_file=None, database_url=url, database_schema=schema)
    settings = _settings(base, tmp_path, anvil, token)
    shop = Shop("", settings, anvil, token, settings.pay_to or "")
    auth = shop.session()
    payer = shop.payer()
    with UvicornThread(_app(settings)) as one, UvicornThread(_app(settings)) as two:
        async with (
            httpx.AsyncClient(base_url=one.url, timeout=60) as first,
            httpx.AsyncClient(base_url=two.url, timeout=60) as second,
        ):
            user = await _user(first, auth)
            header = await shop.payment(first, auth, payer)
            headers = {**auth, "PAYMENT-SIGNATURE": header}
            answers = await asyncio.gather(
                *(c.post(PURCHASE, json={}, headers=headers) for c in (first, second) * 3)
            )
            statuses = sorted(a.status_code for a in answers)
            assert 200 in statuses, [a.text for a in answers]
            assert set(statuses) <= {200, 402, 409}, [a.text for a in answers]
            assert await _balance(second, auth) == await _balance(first, auth)
    assert len(await shop.entries(user)) == 1
    assert shop.funds(payer) == 4 * PRICE
    assert len([r for r in await shop.gate_records() if r.state is State.SETTLED]) == 1
