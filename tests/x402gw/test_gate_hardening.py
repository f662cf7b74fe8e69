"""Regression tests of the payment gate's hardening: each failed on the gate before the fix.

Real anvil with the project's EIP-3009 token; a real uvicorn server where the defect needs one
(root path, disconnects, memory under concurrent uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from eth_account import Account
from lab.webserver import UvicornThread
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
from starlette.routing import Mount

from x402gw.config import InvalidRouteConfig, PaymentConfig, PricedRoute
from x402gw.exact_evm import VALID_BEFORE
from x402gw.ledger import Ledger, State
from x402gw.middleware import PaymentMiddleware
from x402gw.wire import decode_payment_required, encode_payment_payload

if TYPE_CHECKING:
    from conftest import EvmLab


@pytest.fixture
async def gateway(evm: EvmLab, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with lab_gateway(evm, tmp_path / "l.sqlite3") as gw:
        yield gw


# --- item 2: the router's path, and nothing unpaid reaches a priced app --------------------------


async def test_a_mounted_gate_still_charges(gateway: Gateway, evm: EvmLab) -> None:
    """Inside Mount("/svc", gate) the path still starts with /svc; routes match the rest."""
    outer = Starlette(routes=[Mount("/svc", app=gateway.app)])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/svc/paid")
        paid = await http.get(
            "/svc/paid", headers=header(signed(evm, gateway.routes[0].requirements()))
        )
    assert response.status_code == 402
    assert decode_payment_required(response.headers["payment-required"]).resource is not None
    assert paid.status_code == 200
    assert gateway.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_a_gate_behind_a_root_path_still_charges(gateway: Gateway) -> None:
    """uvicorn --root-path /svc: a proxy strips /svc, uvicorn puts it back in front of the path
    (scope path /svc/paid, root_path /svc)."""
    with UvicornThread(gateway.app, root_path="/svc") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/paid")
    assert response.status_code == 402
    assert gateway.calls["paid"] == 0


async def test_deny_mode_refuses_what_matches_no_priced_route(evm: EvmLab, tmp_path: Path) -> None:
    async with (
        lab_gateway(evm, tmp_path / "l.sqlite3", unmatched="deny") as gw,
        gw.client() as http,
    ):
        free = await http.get("/free")
        trailing = await http.get("/paid/")
        wrong_method = await http.get("/echo")
        options = await http.options("/paid")
    assert free.status_code == trailing.status_code == 404
    assert free.json()["error"] == "route_not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert options.status_code == 405
    assert gw.calls["free"] == 0
    assert gw.calls["echo"] == 0


# --- item 3: charged but pending -> the content once the transfer is confirmed ---------------------


async def test_pending_settlement_keeps_the_content_for_the_retry(
    evm: EvmLab, tmp_path: Path
) -> None:
    with RpcRelay(evm.anvil.url) as relay:
        facilitator = local_facilitator(relay.url, evm.operator, evm.network)
        facilitator.settler.receipt_timeout = 1.0
        db = tmp_path / "l.sqlite3"
        gw = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, db)
        offer = gw.routes[0].requirements()
        pid = "pending_0123456789abcdef"
        first = with_pid(signed(evm, offer), pid)
        try:
            relay.hide_receipts = True
            async with gw.client() as http:
                pending = await http.get("/paid?q=1", headers=header(first))
                # A retry signs a fresh authorization with the same identifier.
                still = await http.get(
                    "/paid?q=1", headers=header(with_pid(signed(evm, offer), pid))
                )
            assert pending.status_code == 402
            assert challenge_error(pending) == "settlement_pending"
            assert pending.headers["retry-after"]
            assert evm.balance(evm.merchant) == PRICE  # the transfer did mine
            assert still.status_code in (200, 402)
            relay.hide_receipts = False
            await asyncio.sleep(2.1)  # past the on-demand reconcile's throttle
            async with gw.client() as http:
                by_pid = await http.get(
                    "/paid?q=1", headers=header(with_pid(signed(evm, offer), pid))
                )
                by_authorization = await http.get("/paid?q=1", headers=header(first))
            assert by_pid.status_code == 200
            assert by_pid.json() == {"report": "sunny", "q": "1"}
            assert by_authorization.status_code == 200
            assert by_authorization.content == by_pid.content
            assert by_pid.headers["payment-response"]
            assert gw.calls["paid"] == 1
            assert evm.balance(evm.merchant) == PRICE
        finally:
            await close_gateway(gw)
        # A new process on the same ledger answers the same.
        gw2 = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, db)
        try:
            async with gw2.client() as http:
                again = await http.get("/paid?q=1", headers=header(first))
            assert again.status_code == 200
            assert gw2.calls["paid"] == 0
        finally:
            await close_gateway(gw2, facilitator)


async def test_reconcile_runs_periodically(evm: EvmLab, tmp_path: Path) -> None:
    with RpcRelay(evm.anvil.url) as relay:
        facilitator = local_facilitator(relay.url, evm.operator, evm.network)
        facilitator.settler.receipt_timeout = 1.0
        gw = build_gateway(
            facilitator,
            evm.merchant,
            evm.network,
            evm.asset,
            tmp_path / "l.sqlite3",
            maintenance_interval=0.2,
        )
        try:
            relay.hide_receipts = True
            async with gw.client() as http:
                pending = await http.get(
                    "/paid", headers=header(signed(evm, gw.routes[0].requirements()))
                )
            assert challenge_error(pending) == "settlement_pending"
            relay.hide_receipts = False
            deadline = time.monotonic() + 15
            states: list[str] = []
            while time.monotonic() < deadline:
                states = [r.state for r in await gw.ledger.records()]
                if states == ["settled"]:
                    break
                await asyncio.sleep(0.1)
            assert states == ["settled"]
        finally:
            await close_gateway(gw, facilitator)


# --- item 1: reservations a crashed process left are released ----------------------------------


async def test_stale_reservations_are_released_at_start_and_periodically(
    evm: EvmLab, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    past = Ledger(db, clock=lambda: time.time() - 3600)
    await past.migrate()

    async def reserve(nonce: str) -> str:
        record = await past.reserve(
            scheme="exact",
            network=evm.network,
            asset=evm.token,
            payer=evm.payer.address,
            pay_to=evm.merchant,
            amount=PRICE,
            nonce=nonce,
            valid_before=int(time.time()) + 300,
            resource="GET /paid",
            fingerprint="0" * 64,
        )
        return record.id

    first = await reserve("0x" + "11" * 32)
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    gw = build_gateway(
        facilitator, evm.merchant, evm.network, evm.asset, db, maintenance_interval=0.2
    )
    try:
        await gw.app.startup()
        assert (await gw.ledger.get(first)).state is State.RELEASED
        second = await reserve("0x" + "22" * 32)  # "crashed" while the gate runs
        deadline = time.monotonic() + 10
        while (await gw.ledger.get(second)).state is not State.RELEASED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await close_gateway(gw)
        await past.close()
        await facilitator.aclose()


# --- item 5: no work for money that cannot settle ----------------------------------------------


async def test_validity_must_cover_the_handler_deadline(gateway: Gateway, evm: EvmLab) -> None:
    slow = next(r for r in gateway.routes if r.path == "/slow")  # handler_timeout 3
    window = gateway.app.config.settle_window_seconds
    short = signed(evm, slow.requirements(), valid_before=int(time.time()) + int(window))
    enough = signed(evm, slow.requirements(), valid_before=int(time.time()) + int(window) + 5)
    async with gateway.client() as http:
        refused = await http.get("/slow?s=0", headers=header(short))
        served = await http.get("/slow?s=0", headers=header(enough))
    assert refused.status_code == 402
    assert challenge_error(refused) == VALID_BEFORE
    assert served.status_code == 200
    assert gateway.calls["slow"] == 1


def test_a_route_whose_deadline_no_payment_can_cover_is_refused(evm: EvmLab) -> None:
    with pytest.raises(InvalidRouteConfig, match="handler_timeout"):
        PaymentConfig(
            routes=[
                PricedRoute(
                    "GET",
                    "/x",
                    PRICE,
                    evm.merchant,
                    evm.network,
                    asset=evm.asset,
                    max_timeout_seconds=30,
                    handler_timeout=20,
                )
            ],
            facilitator=None,  # type: ignore[arg-type]
            ledger=None,  # type: ignore[arg-type]
        )


async def test_handler_past_its_deadline_is_cancelled_and_not_charged(
    gateway: Gateway, evm: EvmLab
) -> None:
    slow = next(r for r in gateway.routes if r.path == "/slow")
    async with gateway.client() as http:
        response = await http.get("/slow?s=10", headers=header(signed(evm, slow.requirements())))
    assert response.status_code == 504
    assert response.json()["error"] == "handler_timeout"
    assert gateway.calls["slow"] == 1
    assert gateway.calls["slow_done"] == 0
    assert evm.balance(evm.merchant) == 0
    assert [r.state for r in await gateway.ledger.records()] == ["released"]


async def test_five_parallel_authorizations_from_a_one_price_wallet_run_once(
    gateway: Gateway, evm: EvmLab
) -> None:
    poor = Account.create()
    evm.anvil.mint(evm.token, poor.address, PRICE)
    slow = next(r for r in gateway.routes if r.path == "/slow")
    payments = [signed(evm, slow.requirements(), poor) for _ in range(5)]
    async with gateway.client() as http:
        responses = await asyncio.gather(
            *(http.get("/slow?s=0.5", headers=header(p)) for p in payments)
        )
    assert sorted(r.status_code for r in responses) == [200, 402, 402, 402, 402]
    assert gateway.calls["slow"] == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_a_wallet_with_enough_for_all_runs_all(gateway: Gateway, evm: EvmLab) -> None:
    rich = Account.create()
    evm.anvil.mint(evm.token, rich.address, 3 * PRICE)
    slow = next(r for r in gateway.routes if r.path == "/slow")
    payments = [signed(evm, slow.requirements(), rich) for _ in range(3)]
    async with gateway.client() as http:
        responses = await asyncio.gather(
            *(http.get("/slow?s=0.3", headers=header(p)) for p in payments)
        )
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert evm.balance(evm.merchant) == 3 * PRICE


# --- item 6: a client that left is not charged -------------------------------------------------


async def test_client_gone_before_settlement_is_not_charged(gateway: Gateway, evm: EvmLab) -> None:
    slow = next(r for r in gateway.routes if r.path == "/slow")
    payment = signed(evm, slow.requirements())
    with UvicornThread(gateway.app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/slow?s=1", headers=header(payment))
        deadline = time.monotonic() + 10
        while gateway.calls["slow_done"] == 0 or not await gateway.ledger.records():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        states = [r.state for r in await gateway.ledger.records()]
    assert states == ["released"]
    assert evm.balance(evm.merchant) == 0


# --- item 8: no body is buffered before the payment passes its offline checks -----------------


async def test_oversized_body_refused_by_content_length(gateway: Gateway, evm: EvmLab) -> None:
    cap = gateway.app.config.max_request_body_bytes
    payment = header(signed(evm, gateway.routes[1].requirements()))
    async with gateway.client() as http:
        response = await http.post("/echo", content=b"x" * (cap + 1), headers=payment)
        bad = await http.post("/echo", content=b"x", headers={**payment, "content-length": "1x"})
    assert response.status_code == 413
    assert bad.status_code == 400
    assert gateway.calls["echo"] == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_garbage_payments_with_big_uploads_are_not_buffered(
    evm: EvmLab, tmp_path: Path
) -> None:
    from paylab import start_paid_server, stop

    proc, url = start_paid_server(
        {
            "rpc": evm.anvil.url,
            "operator-key": "0x" + bytes(evm.operator.key).hex().removeprefix("0x"),
            "token": evm.token,
            "merchant": evm.merchant,
            "ledger": str(tmp_path / "l.sqlite3"),
        }
    )
    try:
        offer = signed(evm, _echo_offer(evm))
        garbage = offer.model_copy(
            update={"payload": {**offer.payload, "signature": "0x" + "11" * 65}}
        )
        bad_header = encode_payment_payload(garbage).encode()
        host, port = url.removeprefix("http://").split(":")
        before = _rss_kib(proc.pid)
        size = 3 * 1024 * 1024

        def upload() -> bytes:
            with socket.create_connection((host, int(port)), timeout=20) as sock:
                sock.sendall(
                    b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n"
                    + b"payment-signature: "
                    + bad_header
                    + b"\r\n"
                    + f"content-length: {size}\r\n\r\n".encode()
                )
                chunk = b"x" * 65536
                sent = 0
                with contextlib.suppress(OSError):
                    while sent < size:
                        sock.sendall(chunk)
                        sent += len(chunk)
                return sock.recv(200)

        answers = await asyncio.gather(*(asyncio.to_thread(upload) for _ in range(30)))
        after = _rss_kib(proc.pid)
    finally:
        stop(proc)
    assert all(a.startswith(b"HTTP/1.1 402") for a in answers)
    assert after - before < 8 * 1024, f"grew {after - before} KiB"


def _echo_offer(evm: EvmLab) -> Any:
    from paylab import priced_routes

    return next(
        r for r in priced_routes(evm.merchant, evm.network, evm.asset) if r.path == "/echo"
    ).requirements()


async def test_a_forged_signature_costs_no_rpc_call(evm: EvmLab, tmp_path: Path) -> None:
    with RpcRelay(evm.anvil.url) as relay:
        async with lab_gateway(evm, tmp_path / "l.sqlite3", rpc_url=relay.url) as gw:
            await gw.app.startup()
            relay.methods.clear()
            payment = signed(evm, gw.routes[0].requirements())
            forged = payment.model_copy(
                update={"payload": {**payment.payload, "signature": "0x" + "ab" * 65}}
            )
            async with gw.client() as http:
                response = await http.get("/paid", headers=header(forged))
    assert response.status_code == 402
    assert challenge_error(response).startswith("invalid_exact_evm")
    assert relay.methods == []


# --- item 14: the payment identifier is no bearer token -----------------------------------------


async def test_payment_identifier_replay_is_bound_to_the_payer(
    gateway: Gateway, evm: EvmLab
) -> None:
    pid = "bound_0123456789abcdef"
    offer = gateway.routes[0].requirements()
    other = Account.create()
    evm.anvil.mint(evm.token, other.address, PRICE)
    async with gateway.client() as http:
        first = await http.get("/paid?q=s", headers=header(with_pid(signed(evm, offer), pid)))
        stranger = await http.get(
            "/paid?q=s", headers=header(with_pid(signed(evm, offer, other), pid))
        )
        forged_payment = with_pid(signed(evm, offer), pid)
        forged = await http.get(
            "/paid?q=s",
            headers=header(
                forged_payment.model_copy(
                    update={"payload": {**forged_payment.payload, "signature": "0x" + "cd" * 65}}
                )
            ),
        )
        owner = await http.get("/paid?q=s", headers=header(with_pid(signed(evm, offer), pid)))
    assert first.status_code == 200
    assert stranger.status_code == 409
    assert stranger.json()["error"] == "payment_identifier_conflict"
    assert forged.status_code == 402
    assert owner.status_code == 200
    assert owner.content == first.content
    assert gateway.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE


# --- item 10: gate errors through the application's renderer -----------------------------------


async def test_gate_errors_use_the_configured_renderer(evm: EvmLab, tmp_path: Path) -> None:
    seen: list[tuple[int, str]] = []

    def render(
        scope: Any, status: int, code: str, message: str, x402_body: Any
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        import json

        seen.append((status, code))
        body = {"envelope": {"code": code, "status": status}}
        if x402_body is not None:
            body = {**body, **x402_body}
        return [(b"x-rendered", b"1"), (b"cache-control", b"public")], json.dumps(body).encode()

    async with (
        lab_gateway(evm, tmp_path / "l.sqlite3", render_error=render) as gw,
        gw.client() as http,
    ):
        challenge = await http.get("/paid")
        too_big = await http.post(
            "/echo",
            content=b"x" * (gw.app.config.max_request_body_bytes + 1),
            headers=header(signed(evm, gw.routes[1].requirements())),
        )
    assert challenge.status_code == 402
    body = challenge.json()
    assert body["envelope"]["code"] == "Payment required"
    assert body["x402Version"] == 1
    assert body["accepts"]
    assert challenge.headers["payment-required"]
    assert challenge.headers["cache-control"] == "no-store"
    assert challenge.headers["x-rendered"] == "1"
    assert too_big.status_code == 413
    assert too_big.json() == {"envelope": {"code": "request_body_too_large", "status": 413}}
    assert (413, "request_body_too_large") in seen


# --- item 21: the paths no test covered --------------------------------------------------------


async def test_both_payment_headers_v2_wins(gateway: Gateway, evm: EvmLab) -> None:
    good = encode_payment_payload(signed(evm, gateway.routes[0].requirements()))
    async with gateway.client() as http:
        v2_good = await http.get("/paid", headers={"PAYMENT-SIGNATURE": good, "X-PAYMENT": "!!"})
        v2_bad = await http.get("/paid", headers={"PAYMENT-SIGNATURE": "!!", "X-PAYMENT": good})
    assert v2_good.status_code == 200
    assert v2_bad.status_code == 402
    assert challenge_error(v2_bad) == "invalid_payment_header"
    assert gateway.calls["paid"] == 1


def test_valid_after_equal_to_now_is_accepted(evm: EvmLab) -> None:
    """The window's lower edge: validAfter == now passes the gate's checks, now + 1 does not.

    (Pure: a token's own check is block.timestamp > validAfter, so on chain the edge depends on
    the block clock; the gate's rule is the SDK's validAfter <= now.)
    """
    from paylab import priced_routes

    from x402gw import _flow
    from x402gw.exact_evm import Candidate
    from x402gw.networks import NETWORKS

    offer = priced_routes(evm.merchant, evm.network, evm.asset)[0].requirements()
    now = int(time.time())
    at_edge = _flow.offline_check(
        signed(evm, offer, valid_after=now), offer, now=now, networks=NETWORKS
    )
    early = _flow.offline_check(
        signed(evm, offer, valid_after=now + 1), offer, now=now, networks=NETWORKS
    )
    assert isinstance(at_edge, Candidate)
    assert isinstance(early, _flow.Problem)
    assert early.code == "invalid_exact_evm_payload_authorization_valid_after"


async def test_handler_status_400_is_not_charged(gateway: Gateway, evm: EvmLab) -> None:
    bad = next(r for r in gateway.routes if r.path == "/bad")
    async with gateway.client() as http:
        response = await http.get("/bad", headers=header(signed(evm, bad.requirements())))
    assert response.status_code == 400
    assert "payment-response" not in response.headers
    assert gateway.calls["bad"] == 1
    assert evm.balance(evm.merchant) == 0
    assert [r.state for r in await gateway.ledger.records()] == ["released"]


async def test_middleware_startup_and_close_are_idempotent(gateway: Gateway) -> None:
    app: PaymentMiddleware = gateway.app
    await app.startup()
    task = app._maintenance
    await app.startup()
    assert app._maintenance is task
    assert task is not None
    await app.aclose()
    await app.aclose()
    assert task.cancelled()
    assert app._maintenance is None
