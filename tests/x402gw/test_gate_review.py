"""Regression tests of the defects an adversarial review found in the hardened gate (each one
reproduced on anvil before its fix): charged-without-delivery paths, unpaid work, forged replays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from eth_account import Account
from paylab import (
    PRICE,
    Gateway,
    RpcRelay,
    build_gateway,
    challenge_error,
    close_gateway,
    header,
    lab_gateway,
    local_facilitator,
    signed,
    with_pid,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from x402gw.config import PaymentConfig, PricedRoute
from x402gw.errors import ChainError
from x402gw.facilitator import LocalFacilitator, reconcile_ledger
from x402gw.ledger import Ledger, PaymentIdentifierInUse, State
from x402gw.middleware import PaymentMiddleware
from x402gw.wire import PaymentPayload

if TYPE_CHECKING:
    from conftest import EvmLab


def _resigned(payload: PaymentPayload, signature: str) -> PaymentPayload:
    return payload.model_copy(update={"payload": {**payload.payload, "signature": signature}})


class _Hiding:
    """A gateway whose facilitator talks to anvil through a relay that can hide receipts."""

    def __init__(self, evm: EvmLab, tmp_path: Path, relay: RpcRelay, **options: Any) -> None:
        self.facilitator = local_facilitator(relay.url, evm.operator, evm.network)
        self.facilitator.settler.receipt_timeout = 1.0
        self.gw = build_gateway(
            self.facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db", **options
        )

    async def unconfirmed(
        self, relay: RpcRelay, method: str, url: str, payment: PaymentPayload
    ) -> httpx.Response:
        """Pay for ``url`` while the relay hides receipts (so the settlement stays pending)."""
        relay.hide_receipts = True
        try:
            async with self.gw.client() as http:
                return await http.request(method, url, headers=header(payment))
        finally:
            relay.hide_receipts = False

    async def close(self) -> None:
        await close_gateway(self.gw, self.facilitator)


async def test_pending_without_identifier_is_delivered_to_the_same_authorization(
    evm: EvmLab, tmp_path: Path
) -> None:
    """A v1-style client (no payment identifier) retries with the same header."""
    with RpcRelay(evm.anvil.url) as relay:
        lab = _Hiding(evm, tmp_path, relay)
        first = signed(evm, lab.gw.routes[0].requirements())
        try:
            pending = await lab.unconfirmed(relay, "GET", "/paid?q=1", first)
            await asyncio.sleep(2.1)  # past the on-demand reconcile's throttle
            async with lab.gw.client() as http:
                again = await http.get("/paid?q=1", headers=header(first))
        finally:
            await lab.close()
    assert pending.status_code == 402
    assert challenge_error(pending) == "settlement_pending"
    assert again.status_code == 200, again.text
    assert again.json() == {"report": "sunny", "q": "1"}
    assert lab.gw.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_backend_failure_after_broadcast_is_pending_not_free(
    evm: EvmLab, tmp_path: Path
) -> None:
    """The node drops while the receipt is awaited: the payer may be charged, so the answer is
    "pending" and the content is released once reconcile finds the transfer."""

    async def drop(tx_hash: str) -> None:
        raise ChainError("connection reset while waiting for the receipt")

    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network, after_broadcast=drop)
    gw = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
    payment = signed(evm, gw.routes[0].requirements())
    try:
        async with gw.client() as http:
            first = await http.get("/paid", headers=header(payment))
            facilitator._after_broadcast = None
            await asyncio.sleep(2.1)
            again = await http.get("/paid", headers=header(payment))
    finally:
        await close_gateway(gw, facilitator)
    assert first.status_code == 402
    assert challenge_error(first) == "settlement_pending"
    assert "not charged" not in first.text
    assert evm.balance(evm.merchant) == PRICE
    assert again.status_code == 200, again.text
    assert gw.calls["paid"] == 1


async def test_a_reconcile_that_settles_first_keeps_the_content(
    evm: EvmLab, tmp_path: Path
) -> None:
    holder: dict[str, Gateway] = {}

    async def reconcile_now(tx_hash: str) -> None:  # a maintenance pass during the wait
        gw = holder["gw"]
        assert isinstance(gw.facilitator, LocalFacilitator)
        await reconcile_ledger(gw.ledger, gw.facilitator.client)

    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, after_broadcast=reconcile_now
    )
    gw = holder["gw"] = build_gateway(
        facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db"
    )
    pid = "race_0123456789abcdef"
    offer = gw.routes[0].requirements()
    try:
        async with gw.client() as http:
            first = await http.get("/paid?q=1", headers=header(with_pid(signed(evm, offer), pid)))
            facilitator._after_broadcast = None
            again = await http.get("/paid?q=1", headers=header(with_pid(signed(evm, offer), pid)))
    finally:
        await close_gateway(gw, facilitator)
    assert first.status_code == 200
    assert again.status_code == 200, again.text
    assert again.content == first.content
    assert gw.calls["paid"] == 1


async def test_upfront_route_with_pending_settlement_runs_once_on_retry(
    evm: EvmLab, tmp_path: Path
) -> None:
    with RpcRelay(evm.anvil.url) as relay:
        lab = _Hiding(evm, tmp_path, relay)
        upfront = next(r for r in lab.gw.routes if r.upfront)
        payment = signed(evm, upfront.requirements())
        try:
            pending = await lab.unconfirmed(relay, "POST", "/upfront", payment)
            ran_before = lab.gw.calls["upfront"]
            await asyncio.sleep(2.1)
            async with lab.gw.client() as http:
                retries = await asyncio.gather(
                    *(http.post("/upfront", headers=header(payment)) for _ in range(3))
                )
                later = await http.post("/upfront", headers=header(payment))
        finally:
            await lab.close()
    assert pending.status_code == 402
    assert challenge_error(pending) == "settlement_pending"
    assert ran_before == 0
    assert lab.gw.calls["upfront"] == 1  # one run, whatever the retries raced
    assert any(r.status_code == 200 for r in retries)
    assert all(r.status_code in (200, 402, 409) for r in retries)
    assert later.status_code == 200
    assert later.json() == {"side_effect": "done"}
    assert evm.balance(evm.merchant) == PRICE


async def test_reconcile_judges_expiry_by_the_chain_clock(evm: EvmLab, tmp_path: Path) -> None:
    """A transfer still in the pool is not failed because this machine's clock passed
    validBefore while the chain's did not."""
    async with lab_gateway(evm, tmp_path / "l.db") as gw:
        ledger = gw.ledger
        await ledger.migrate()
        assert isinstance(gw.facilitator, LocalFacilitator)
        chain_now = await gw.facilitator.client.latest_block_timestamp()
        record = await ledger.reserve(
            scheme="exact",
            network=evm.network,
            asset=evm.token,
            payer=evm.payer.address,
            pay_to=evm.merchant,
            amount=PRICE,
            nonce="0x" + "42" * 32,
            valid_before=chain_now + 3600,
            resource="GET /paid",
            fingerprint="0" * 64,
        )
        await ledger.mark_settling(record.id)
        late = Ledger(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: chain_now + 7200.0)
        try:
            summary = await reconcile_ledger(late, gw.facilitator.client)
        finally:
            await late.close()
        assert summary.pending == [record.id]  # unused but not expired on chain: undecided
        assert (await ledger.get(record.id)).state is State.SETTLING


async def _asgi(
    app: Any,
    path: str,
    headers: dict[str, str],
    *,
    method: str = "GET",
    body: bytes = b"",
    delay: float = 0.0,
    extensions: dict[str, Any] | None = None,
) -> tuple[int, bytes]:
    """One request straight through ASGI (to control the scope and when the body arrives)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    if extensions is not None:
        scope["extensions"] = extensions
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    done.set()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


Handler = Callable[[Request], Awaitable[Response]]


async def _single_route(
    evm: EvmLab,
    tmp_path: Path,
    handler: Handler,
    run: Callable[[PaymentMiddleware, PricedRoute], Awaitable[None]],
    **route_options: Any,
) -> None:
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    route = PricedRoute(
        "GET", "/r", PRICE, evm.merchant, evm.network, asset=evm.asset, **route_options
    )
    app = PaymentMiddleware(
        Starlette(routes=[Route("/r", handler)]),
        PaymentConfig(
            routes=[route], facilitator=facilitator, ledger=ledger, settle_window_seconds=6
        ),
    )
    try:
        await run(app, route)
    finally:
        await app.aclose()
        await facilitator.aclose()
        await ledger.close()


async def test_pathsend_is_not_a_free_empty_answer(evm: EvmLab, tmp_path: Path) -> None:
    """A server offering ``http.response.pathsend`` (Granian): FileResponse would skip the body
    messages the gate captures; the gate hides the extension, so the file is sent as bytes."""
    report = tmp_path / "report.txt"
    report.write_text("the paid report " * 100)

    async def serve(request: Request) -> Response:
        return FileResponse(report)

    async def run(app: PaymentMiddleware, route: PricedRoute) -> None:
        status, body = await _asgi(
            app,
            "/r",
            header(signed(evm, route.requirements())),
            extensions={"http.response.pathsend": {}},
        )
        assert status == 200
        assert body == report.read_bytes()

    await _single_route(evm, tmp_path, serve, run)
    assert evm.balance(evm.merchant) == PRICE


async def test_a_handler_raising_timeout_error_is_a_handler_error(
    evm: EvmLab, tmp_path: Path
) -> None:
    async def upstream_timeout(request: Request) -> Response:
        raise TimeoutError("an upstream call timed out")

    async def run(app: PaymentMiddleware, route: PricedRoute) -> None:
        status, body = await _asgi(app, "/r", header(signed(evm, route.requirements())))
        assert status == 500
        assert b"handler_error" in body
        assert [r.state for r in await app.config.ledger.records()] == [State.RELEASED]

    await _single_route(evm, tmp_path, upstream_timeout, run)
    assert evm.balance(evm.merchant) == 0


async def test_a_slow_upload_counts_against_the_validity_window(
    evm: EvmLab, tmp_path: Path
) -> None:
    ran: list[bool] = []

    async def work(request: Request) -> Response:
        ran.append(True)
        return JSONResponse({"ok": True})

    async def run(app: PaymentMiddleware, route: PricedRoute) -> None:
        # Needs now + 6 (window) + 3 (deadline): enough at the start, not after 3.5 s of upload.
        payment = signed(evm, route.requirements(), valid_before=int(time.time()) + 11)
        status, _ = await _asgi(app, "/r", header(payment), body=b"x", delay=3.5)
        assert status == 402
        assert ran == []

    await _single_route(evm, tmp_path, work, run, handler_timeout=3)
    assert evm.balance(evm.merchant) == 0


class _Recording:
    """A rate limiter that allows everything and remembers the keys it was asked about."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def hit(self, key: str) -> float | None:
        self.keys.append(key)
        return None


async def test_an_unproven_payer_is_neither_rate_limited_nor_replayed(
    evm: EvmLab, tmp_path: Path
) -> None:
    """A non-ECDSA signature with someone else's address in ``from``: it must neither spend
    that payer's rate limit nor receive their stored answer."""
    limiter = _Recording()
    pid = "victim_0123456789abcdef"
    async with lab_gateway(evm, tmp_path / "l.db", rate_limiter=limiter) as gw:
        offer = gw.routes[0].requirements()
        async with gw.client() as http:
            paid = await http.get("/paid?q=v", headers=header(with_pid(signed(evm, offer), pid)))
            victim_hits = limiter.keys.count("payer:" + evm.payer.address.lower())
            attacker = Account.create()
            forged = _resigned(
                with_pid(signed(evm, offer, attacker, from_address=evm.payer.address), pid),
                "0x" + "cd" * 66,
            )
            stolen = await http.get("/paid?q=v", headers=header(forged))
        assert paid.status_code == 200
        assert stolen.status_code == 402
        assert b"sunny" not in stolen.content
        assert limiter.keys.count("payer:" + evm.payer.address.lower()) == victim_hits
        assert gw.calls["paid"] == 1


async def test_a_payment_settled_during_verify_is_counted(evm: EvmLab, tmp_path: Path) -> None:
    """Two payments from a wallet holding one price: B's verify (simulation) passes while A is
    still unsettled, A settles, then B reserves. B must not run on a balance already spent."""
    poor = Account.create()
    evm.anvil.mint(evm.token, poor.address, PRICE)
    async with lab_gateway(evm, tmp_path / "l.db") as gw:
        facilitator = gw.facilitator
        assert isinstance(facilitator, LocalFacilitator)
        offer = gw.routes[0].requirements()
        pay_a, pay_b = signed(evm, offer, poor), signed(evm, offer, poor)
        real_verify = facilitator.verify
        a_done, b_verified = asyncio.Event(), asyncio.Event()

        async def verify(payload: Any, requirements: Any) -> Any:
            result = await real_verify(payload, requirements)
            if payload.payload["authorization"]["nonce"] == pay_b.payload["authorization"]["nonce"]:
                b_verified.set()
                await a_done.wait()
            return result

        facilitator.verify = verify  # type: ignore[method-assign]
        async with gw.client() as http:
            b = asyncio.create_task(http.get("/paid?q=b", headers=header(pay_b)))
            await b_verified.wait()
            a = await http.get("/paid?q=a", headers=header(pay_a))
            a_done.set()
            b_answer = await b
        assert a.status_code == 200
        assert b_answer.status_code == 402
        assert gw.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_head_only_learns_the_price(gateway_evm: tuple[Gateway, EvmLab]) -> None:
    gw, evm = gateway_evm
    async with gw.client() as http:
        response = await http.head(
            "/paid", headers=header(signed(evm, gw.routes[0].requirements()))
        )
    assert response.status_code == 402
    assert response.headers["payment-required"]
    assert gw.calls["paid"] == 0
    assert evm.balance(evm.merchant) == 0


async def test_deny_mode_closes_websockets(evm: EvmLab, tmp_path: Path) -> None:
    async with lab_gateway(evm, tmp_path / "l.db", unmatched="deny") as gw:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await gw.app({"type": "websocket", "path": "/paid", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


@pytest.fixture
async def gateway_evm(evm: EvmLab, tmp_path: Path) -> Any:
    async with lab_gateway(evm, tmp_path / "l.db") as gw:
        yield gw, evm


async def test_remote_facilitator_pending_is_reconciled_through_the_chain_client(
    evm: EvmLab, tmp_path: Path
) -> None:
    """With a remote facilitator the gate reads the chain itself (``reconcile_client``): a
    pending settlement is resolved and its content released, and the payer is not locked out."""
    from lab.webserver import UvicornThread

    from x402gw.chain import ChainClient
    from x402gw.facilitator import HttpFacilitator
    from x402gw.facilitator_app import FacilitatorApp

    with RpcRelay(evm.anvil.url) as relay:
        remote_side = local_facilitator(
            relay.url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
        )
        remote_side.settler.receipt_timeout = 1.0
        token = "gate-review-token-0123456789"
        with UvicornThread(FacilitatorApp(remote_side, tokens=[token])) as server:
            remote = HttpFacilitator(server.url, bearer_token=token)
            chain = ChainClient(evm.anvil.url)
            gw = build_gateway(
                remote,
                evm.merchant,
                evm.network,
                evm.asset,
                tmp_path / "l.db",
                reconcile_client=chain,
            )
            payment = signed(evm, gw.routes[0].requirements())
            try:
                relay.hide_receipts = True
                async with gw.client() as http:
                    pending = await http.get("/paid", headers=header(payment))
                relay.hide_receipts = False
                await asyncio.sleep(2.1)
                async with gw.client() as http:
                    again = await http.get("/paid", headers=header(payment))
                    fresh = await http.get(
                        "/paid", headers=header(signed(evm, gw.routes[0].requirements()))
                    )
            finally:
                await close_gateway(gw, remote, chain)
    assert pending.status_code == 402
    assert challenge_error(pending) == "settlement_pending"
    assert again.status_code == 200, again.text
    assert fresh.status_code == 200, fresh.text
    assert gw.calls["paid"] == 2
    assert evm.balance(evm.merchant) == 2 * PRICE


async def test_an_upfront_run_whose_process_died_is_run_again(evm: EvmLab, tmp_path: Path) -> None:
    """A retry claimed the settled upfront record (status 102) and its process died: while the
    claim is fresh, others wait (409); once older than any run, the next retry runs it."""
    import sqlite3

    with RpcRelay(evm.anvil.url) as relay:
        lab = _Hiding(evm, tmp_path, relay)
        upfront = next(r for r in lab.gw.routes if r.upfront)
        payment = signed(evm, upfront.requirements())
        try:
            pending = await lab.unconfirmed(relay, "POST", "/upfront", payment)
            assert isinstance(lab.facilitator, LocalFacilitator)
            await reconcile_ledger(lab.gw.ledger, lab.facilitator.client)
            (record_id,) = [r.id for r in await lab.gw.ledger.records(State.SETTLED)]
            assert await lab.gw.ledger.claim_response(record_id) is not None  # the dead run
            async with lab.gw.client() as http:
                waiting = await http.post("/upfront", headers=header(payment))
            with sqlite3.connect(tmp_path / "l.db") as db:
                db.execute("UPDATE x402gw_payments SET updated_at = '2000-01-01 00:00:00.000000'")
            async with lab.gw.client() as http:
                rerun = await http.post("/upfront", headers=header(payment))
        finally:
            await lab.close()
    assert pending.status_code == 402
    assert waiting.status_code == 402  # the same authorization, still being served elsewhere
    assert challenge_error(waiting) == "authorization_in_use"
    assert rerun.status_code == 200, rerun.text
    assert lab.gw.calls["upfront"] == 1
    assert evm.balance(evm.merchant) == PRICE


# --- the second review ---------------------------------------------------------------------------


async def test_a_duplicate_during_the_first_upfront_run_does_not_run_it_again(
    evm: EvmLab, tmp_path: Path
) -> None:
    runs: list[int] = []

    async def side_effect(request: Request) -> Response:
        runs.append(1)
        await asyncio.sleep(0.5)
        return JSONResponse({"done": len(runs)})

    async def run(app: PaymentMiddleware, route: PricedRoute) -> None:
        payment = header(signed(evm, route.requirements()))
        first = asyncio.create_task(_asgi(app, "/r", payment))
        await asyncio.sleep(0.3)  # settled, handler running
        second = await _asgi(app, "/r", payment)
        assert (await first)[0] == 200
        assert second[0] in (402, 409)

    await _single_route(evm, tmp_path, side_effect, run, upfront=True)
    assert runs == [1]
    assert evm.balance(evm.merchant) == PRICE


async def test_an_upfront_handler_has_its_deadline(evm: EvmLab, tmp_path: Path) -> None:
    async def hangs(request: Request) -> Response:
        await asyncio.sleep(30)
        return JSONResponse({})

    async def run(app: PaymentMiddleware, route: PricedRoute) -> None:
        status, body = await _asgi(app, "/r", header(signed(evm, route.requirements())))
        assert status == 504
        assert b"handler_timeout" in body

    await _single_route(evm, tmp_path, hangs, run, upfront=True, handler_timeout=1)


async def test_a_forged_signature_gets_no_stored_answer_by_authorization(
    gateway_evm: tuple[Gateway, EvmLab],
) -> None:
    gw, evm = gateway_evm
    payment = signed(evm, gw.routes[0].requirements())
    forged = _resigned(payment, "0x" + "cd" * 66)  # the victim's from and nonce, no key
    async with gw.client() as http:
        paid = await http.get("/paid?q=x", headers=header(payment))
        stolen = await http.get("/paid?q=x", headers=header(forged))
    assert paid.status_code == 200
    assert stolen.status_code == 402
    assert b"sunny" not in stolen.content


async def test_head_on_a_wildcard_route_is_not_charged(
    gateway_evm: tuple[Gateway, EvmLab],
) -> None:
    gw, evm = gateway_evm
    upfront = next(r for r in gw.routes if r.upfront)  # priced for every method
    async with gw.client() as http:
        response = await http.head("/upfront", headers=header(signed(evm, upfront.requirements())))
    assert response.status_code == 402
    assert gw.calls["upfront"] == 0
    assert evm.balance(evm.merchant) == 0


async def test_remote_facilitator_without_a_chain_serves_back_to_back_payments(
    evm: EvmLab, tmp_path: Path
) -> None:
    from lab.webserver import UvicornThread

    from x402gw.facilitator import HttpFacilitator
    from x402gw.facilitator_app import FacilitatorApp

    remote_side = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
    )
    token = "gate-review-token-0123456789"
    with UvicornThread(FacilitatorApp(remote_side, tokens=[token])) as server:
        remote = HttpFacilitator(server.url, bearer_token=token)
        gw = build_gateway(remote, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
        try:
            async with gw.client() as http:
                answers = [
                    await http.get(
                        "/paid", headers=header(signed(evm, gw.routes[0].requirements()))
                    )
                    for _ in range(3)
                ]
        finally:
            await close_gateway(gw, remote)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert evm.balance(evm.merchant) == 3 * PRICE


async def test_the_in_flight_count_reads_an_index_on_sqlite(tmp_path: Path) -> None:
    """Not a scan of every settled record: the count runs on every paid request, on the one
    SQLite writer connection."""
    import sqlite3
    from datetime import UTC, datetime

    from sqlalchemy.dialects import sqlite

    from x402gw.ledger import _statements as sql

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    await ledger.migrate()
    await ledger.close()
    compiled = sql.OUTSTANDING.compile(dialect=sqlite.dialect())
    params = sql.outstanding_params("n", "a", "p", 0, datetime.now(UTC))
    args = [params[name] for name in (compiled.positiontup or [])]
    args = [a.isoformat(sep=" ") if isinstance(a, datetime) else a for a in args]
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.executemany(  # a ledger with history: many settled payments of other payers
            "INSERT INTO x402gw_payments (id, scheme, network, asset, payer, pay_to, amount, "
            "nonce, valid_before, resource, fingerprint, state, created_at, updated_at) VALUES "
            "(?, 'exact', 'n', 'a', ?, 'b', '1', ?, 0, 'r', 'f', 'settled', '2026-01-01', "
            "'2026-01-01')",
            [(f"{i:032x}", f"0x{i % 97:040x}", f"0x{i:064x}") for i in range(3000)],
        )
        db.execute("ANALYZE")
        plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + str(compiled), args)]
    assert any("uq_x402gw_payments_live_authorization" in step for step in plan), plan
    assert not any("MULTI-INDEX OR" in step or step.startswith("SCAN") for step in plan), plan


# --- the third review ----------------------------------------------------------------------------


async def test_an_upfront_run_after_a_reconcile_won_the_race_runs_once(
    evm: EvmLab, tmp_path: Path
) -> None:
    """While the first request waits for its receipt, reconcile settles the record and a
    retry of the same payment claims and runs the handler: the first must not run it too."""
    holder: dict[str, Any] = {}

    async def race(tx_hash: str) -> None:
        gw = holder["gw"]
        await reconcile_ledger(gw.ledger, gw.facilitator.client)
        async with gw.client() as http:
            holder["retry"] = await http.post("/upfront", headers=holder["header"])

    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network, after_broadcast=race)
    gw = holder["gw"] = build_gateway(
        facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db"
    )
    upfront = next(r for r in gw.routes if r.upfront)
    holder["header"] = header(signed(evm, upfront.requirements()))
    try:
        async with gw.client() as http:
            first = await http.post("/upfront", headers=holder["header"])
    finally:
        await close_gateway(gw, facilitator)
    assert gw.calls["upfront"] == 1
    assert sorted([first.status_code, holder["retry"].status_code]) == [200, 409]
    assert evm.balance(evm.merchant) == PRICE


async def test_a_redirected_settle_is_pending_not_not_charged(evm: EvmLab, tmp_path: Path) -> None:
    """A remote facilitator that received /settle and answered with a redirect to a dead port:
    it may have settled, so the gate must not say "not charged"."""
    from lab.webserver import UvicornThread, free_port
    from starlette.responses import RedirectResponse

    from x402gw.facilitator import HttpFacilitator
    from x402gw.facilitator_app import FacilitatorApp

    real = FacilitatorApp(
        local_facilitator(
            evm.anvil.url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
        ),
        allow_unauthenticated=True,
    )
    dead = f"http://127.0.0.1:{free_port()}/settle"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/settle":
            await RedirectResponse(dead, status_code=307)(scope, receive, send)
            return
        await real(scope, receive, send)

    with UvicornThread(app) as server:
        remote = HttpFacilitator(server.url)
        gw = build_gateway(remote, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
        try:
            async with gw.client() as http:
                response = await http.get(
                    "/paid", headers=header(signed(evm, gw.routes[0].requirements()))
                )
            states = [r.state for r in await gw.ledger.records()]
        finally:
            await close_gateway(gw, remote)
    assert response.status_code == 402
    assert challenge_error(response) == "settlement_pending"
    assert "not charged" not in response.text
    assert states == [State.SETTLING]


async def test_a_contract_wallet_gets_its_pending_content_with_the_same_signature(
    evm: EvmLab, tmp_path: Path
) -> None:
    """An EIP-1271 wallet cannot be checked offline; once its nonce is spent, the very
    signature it paid with (stored as a hash) still identifies the repeat."""
    from selfsign import signed_payment

    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    with RpcRelay(evm.anvil.url) as relay:
        lab = _Hiding(evm, tmp_path, relay)
        offer = lab.gw.routes[0].requirements()
        payment = signed_payment(evm.payer, offer, from_address=wallet, erc6492=True)
        pid = "wallet_0123456789abcdef"
        other = signed_payment(evm.payer, offer, from_address=wallet, erc6492=True)
        try:
            pending = await lab.unconfirmed(relay, "GET", "/paid?q=w", with_pid(payment, pid))
            await asyncio.sleep(2.1)
            async with lab.gw.client() as http:
                same = await http.get("/paid?q=w", headers=header(with_pid(payment, pid)))
                forged = await http.get(
                    "/paid?q=w",
                    headers=header(with_pid(_resigned(payment, "0x" + "ab" * 200), pid)),
                )
                fresh = await http.get("/paid?q=w", headers=header(with_pid(other, pid)))
        finally:
            await lab.close()
    assert pending.status_code == 402
    assert challenge_error(pending) == "settlement_pending"
    assert same.status_code == 200, same.text
    assert same.json() == {"report": "sunny", "q": "w"}
    assert forged.status_code == 402
    assert b"sunny" not in forged.content
    assert fresh.status_code == 200  # a fresh authorization of the wallet's: verified, replayed
    assert lab.gw.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_ledger_replay_releases_only_settled_content(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    await ledger.migrate()
    try:
        record = await ledger.reserve(
            scheme="exact",
            network="eip155:31337",
            asset="0x" + "aa" * 20,
            payer="0x" + "01" * 20,
            pay_to="0x" + "bb" * 20,
            amount=PRICE,
            nonce="0x" + "11" * 32,
            valid_before=int(time.time()) + 300,
            resource="GET /r",
            fingerprint="0" * 64,
            payment_identifier="replay_0123456789abcdef",
        )
        await ledger.mark_settling(record.id, response=(200, [], b"paid content"))
        with pytest.raises(PaymentIdentifierInUse):
            await ledger.replay("replay_0123456789abcdef", "0" * 64)
        await ledger.mark_failed(record.id, "transaction_failed")
        with pytest.raises(PaymentIdentifierInUse):
            await ledger.replay("replay_0123456789abcdef", "0" * 64)
    finally:
        await ledger.close()


async def test_a_node_answering_nonsense_before_the_send_sends_nothing(evm: EvmLab) -> None:
    """``eth_estimateGas`` answering null: a typed "not sent", not a TypeError (a 500)."""
    from x402gw.chain import ChainClient, Settler
    from x402gw.errors import NotBroadcast

    client = ChainClient(evm.anvil.url)

    async def null_estimate(method: str, params: list[Any], *, reverts: bool = False) -> Any:
        if method == "eth_estimateGas":
            return None
        return await real(method, params, reverts=reverts)

    real = client.request
    client.request = null_estimate  # type: ignore[method-assign]
    try:
        with pytest.raises(NotBroadcast):
            await Settler(client, evm.operator).send(evm.token, b"\x00" * 4)
    finally:
        await client.aclose()
