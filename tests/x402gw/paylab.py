"""Shared pieces of the middleware tests: a small paid Starlette app, a gateway builder, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from lab.webserver import UvicornThread, free_port
from selfsign import signed_payment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from x402gw.config import PaymentConfig, PricedRoute
from x402gw.facilitator import Facilitator, LocalFacilitator
from x402gw.ledger import Ledger
from x402gw.middleware import PaymentMiddleware
from x402gw.wire import (
    PaymentPayload,
    PaymentRequirements,
    decode_payment_required,
    encode_payment_payload,
)

PRICE = 10_000  # atomic units (0.01 token)


@dataclass
class Calls:
    """How often each handler ran."""

    counts: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def paid_app(calls: Calls) -> Starlette:
    """Handlers for every flow: JSON, POST echo, handler error status, exception, stream, big body."""

    async def paid(request: Request) -> Response:
        calls.hit("paid")
        return JSONResponse({"report": "sunny", "q": request.query_params.get("q")})

    async def echo(request: Request) -> Response:
        calls.hit("echo")
        return JSONResponse({"got": (await request.body()).decode()})

    async def fail(request: Request) -> Response:
        calls.hit("fail")
        return JSONResponse({"error": "nope"}, status_code=500)

    async def boom(request: Request) -> Response:
        calls.hit("boom")
        raise RuntimeError("handler exploded")

    async def stream(request: Request) -> Response:
        calls.hit("stream")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def big(request: Request) -> Response:
        calls.hit("big")
        return PlainTextResponse("x" * 5000)

    async def upfront(request: Request) -> Response:
        calls.hit("upfront")
        return JSONResponse({"side_effect": "done"})

    async def free(request: Request) -> Response:
        calls.hit("free")
        return PlainTextResponse("free")

    async def bad(request: Request) -> Response:
        calls.hit("bad")
        return JSONResponse({"error": "bad input"}, status_code=400)

    async def slow(request: Request) -> Response:
        calls.hit("slow")
        await asyncio.sleep(float(request.query_params.get("s", "1")))
        calls.hit("slow_done")
        return JSONResponse({"slow": "done"})

    return Starlette(
        routes=[
            Route("/paid", paid),
            Route("/echo", echo, methods=["POST"]),
            Route("/fail", fail),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/big", big),
            Route("/upfront", upfront, methods=["POST", "GET"]),
            Route("/free", free),
            Route("/bad", bad),
            Route("/slow", slow),
        ]
    )


def priced_routes(pay_to: str, network: str, asset: Any) -> list[PricedRoute]:
    """Every paid path at :data:`PRICE`; ``/upfront`` settles before its handler."""
    common: dict[str, Any] = {"price": PRICE, "pay_to": pay_to, "network": network, "asset": asset}
    return [
        PricedRoute("GET", "/paid", description="weather", **common),
        PricedRoute("POST", "/echo", **common),
        PricedRoute("GET", "/fail", **common),
        PricedRoute("GET", "/boom", **common),
        PricedRoute("GET", "/stream", **common),
        PricedRoute("GET", "/big", **common),
        PricedRoute("*", "/upfront", upfront=True, **common),
        PricedRoute("GET", "/bad", **common),
        PricedRoute("GET", "/slow", handler_timeout=3, **common),
    ]


@dataclass
class Gateway:
    """A protected app plus the parts tests inspect."""

    app: PaymentMiddleware
    calls: Calls
    ledger: Ledger
    facilitator: Facilitator
    routes: list[PricedRoute]

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An in-process httpx client for the protected app."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


def build_gateway(
    facilitator: Facilitator,
    pay_to: str,
    network: str,
    asset: Any,
    db: Path | str,
    locks: Any = None,
    schema: str | None = None,
    **options: Any,
) -> Gateway:
    """A PaymentMiddleware in front of :func:`paid_app`; ``db`` is a SQLite file or a database URL
    (``schema``: a PostgreSQL schema of its own)."""
    calls = Calls()
    ledger = Ledger(db if isinstance(db, str) else f"sqlite:///{db}", locks=locks, schema=schema)
    routes = priced_routes(pay_to, network, asset)
    config = PaymentConfig(routes=routes, facilitator=facilitator, ledger=ledger, **options)
    return Gateway(PaymentMiddleware(paid_app(calls), config), calls, ledger, facilitator, routes)


async def close_gateway(gw: Gateway, *others: Any) -> None:
    """Stop the gateway's maintenance, close its ledger, then each of ``others`` (facilitators,
    chain clients) with ``aclose()``."""
    await gw.app.aclose()
    await gw.ledger.close()
    for other in others:
        await other.aclose()


def local_facilitator(
    rpc_url: str, operator: Any, network: str, **options: Any
) -> LocalFacilitator:
    """A LocalFacilitator with a short receipt wait (anvil mines instantly)."""
    return LocalFacilitator.from_rpc(rpc_url, operator, network, receipt_timeout=20.0, **options)


@contextlib.asynccontextmanager
async def lab_gateway(
    evm: Any, db: Path | str, *, rpc_url: str | None = None, **options: Any
) -> AsyncIterator[Gateway]:
    """:func:`build_gateway` on the lab chain ``evm`` with a :func:`local_facilitator` (on
    ``rpc_url``, by default the lab node); the facilitator and the ledger are closed after."""
    facilitator = local_facilitator(rpc_url or evm.anvil.url, evm.operator, evm.network)
    gw = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, db, **options)
    try:
        yield gw
    finally:
        await gw.app.aclose()
        await facilitator.aclose()
        await gw.ledger.close()


# --- payments signed by hand, and what the chain says ---------------------------------------


def signed(
    evm: Any,
    offer: PaymentRequirements,
    signer: LocalAccount | None = None,
    **options: Any,
) -> PaymentPayload:
    """A payment signed by us (not the SDK), by the lab payer unless ``signer`` is given; the
    options of :func:`selfsign.signed_payment` (authorization fields, ``domain_name``, ...)."""
    return signed_payment(signer or evm.payer, offer, **options)


def with_pid(payload: PaymentPayload, pid: str) -> PaymentPayload:
    """``payload`` carrying the payment-identifier extension ``pid``."""
    return payload.model_copy(update={"extensions": {"payment-identifier": {"info": {"id": pid}}}})


def challenge_error(response: httpx.Response) -> str:
    """The reason code of a 402 challenge (its ``PAYMENT-REQUIRED`` error, before any ':')."""
    required = decode_payment_required(response.headers["payment-required"])
    return (required.error or "").split(":")[0]


def header(payload: PaymentPayload) -> dict[str, str]:
    """The ``PAYMENT-SIGNATURE`` header carrying ``payload``."""
    return {"PAYMENT-SIGNATURE": encode_payment_payload(payload)}


def block_number(evm: Any) -> int:
    """The lab chain's latest block."""
    return int(evm.anvil.rpc("eth_blockNumber"), 16)


def transactions_since(evm: Any, start: int) -> list[dict[str, Any]]:
    """Receipts of every transaction mined after block ``start``."""
    receipts = []
    for number in range(start + 1, block_number(evm) + 1):
        block = evm.anvil.rpc("eth_getBlockByNumber", hex(number), False)
        receipts += [evm.anvil.rpc("eth_getTransactionReceipt", h) for h in block["transactions"]]
    return receipts


# --------------------------------------------------------------------------------------------


class RpcRelay:
    """A JSON-RPC relay on loopback in front of a node: counts the methods called and, while
    ``hide_receipts`` is set, answers every receipt lookup with null (a receipt not seen yet)."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.hide_receipts = False
        self.methods: list[str] = []
        app = Starlette(routes=[Route("/", self._relay, methods=["POST"])])
        self._server = UvicornThread(app)
        self.url = self._server.url

    async def _relay(self, request: Request) -> Response:
        body = await request.body()
        calls = json.loads(body)
        batch = calls if isinstance(calls, list) else [calls]
        self.methods += [str(call.get("method")) for call in batch]
        async with httpx.AsyncClient(timeout=30) as http:
            upstream = await http.post(
                self.target_url, content=body, headers={"content-type": "application/json"}
            )
        answer = upstream.json()
        if self.hide_receipts:
            receipts = {
                c.get("id") for c in batch if c.get("method") == "eth_getTransactionReceipt"
            }
            for item in answer if isinstance(answer, list) else [answer]:
                if item.get("id") in receipts:
                    item["result"] = None
        return JSONResponse(answer)

    def __enter__(self) -> RpcRelay:
        self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)


class TcpProxy:
    """A loopback TCP relay to ``target`` that can be closed (refusing and cutting connections) and reopened."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None

    def open(self) -> None:
        """Start accepting (again) on the same port."""
        self._run(self._open())

    def close(self) -> None:
        """Stop accepting and cut every relayed connection: the node looks down."""
        self._run(self._close())

    def shutdown(self) -> None:
        """Close and stop the relay thread."""
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[TcpProxy]:
    """A running :class:`TcpProxy`, shut down afterwards."""
    proxy = TcpProxy(port)
    proxy.open()
    try:
        yield proxy
    finally:
        proxy.shutdown()


# --- the official SDK on the other side ------------------------------------------------------


def sdk_facilitator_app(private_key: str, rpc_url: str, network: str) -> Starlette:
    """The SDK's own facilitator core (x402Facilitator + exact EVM) behind /verify /settle /supported."""
    from x402 import x402Facilitator
    from x402.mechanisms.evm.exact import register_exact_evm_facilitator
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
    from x402.schemas import PaymentPayload, PaymentRequirements
    from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

    core = x402Facilitator()
    register_exact_evm_facilitator(
        core, FacilitatorWeb3Signer(private_key=private_key, rpc_url=rpc_url), networks=network
    )

    def parse(body: dict[str, Any]) -> tuple[Any, Any]:
        if body.get("x402Version") == 1:
            return (
                PaymentPayloadV1.model_validate(body["paymentPayload"]),
                PaymentRequirementsV1.model_validate(body["paymentRequirements"]),
            )
        return (
            PaymentPayload.model_validate(body["paymentPayload"]),
            PaymentRequirements.model_validate(body["paymentRequirements"]),
        )

    def dump(model: Any) -> JSONResponse:
        return JSONResponse(model.model_dump(by_alias=True, exclude_none=True, mode="json"))

    async def verify(request: Request) -> Response:
        return dump(await core.verify(*parse(await request.json())))

    async def settle(request: Request) -> Response:
        return dump(await core.settle(*parse(await request.json())))

    async def supported(request: Request) -> Response:
        return dump(core.get_supported())

    return Starlette(
        routes=[
            Route("/verify", verify, methods=["POST"]),
            Route("/settle", settle, methods=["POST"]),
            Route("/supported", supported),
        ]
    )


def sdk_protected_app(facilitator_url: str, pay_to: str, network: str, token: str) -> Any:
    """A Starlette app guarded by the SDK's own resource-server middleware (GET /paid at PRICE)."""
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.server import x402ResourceServer

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    server.register(network, ExactEvmServerScheme())
    routes = {
        "GET /paid": {
            "accepts": {
                "scheme": "exact",
                "payTo": pay_to,
                "network": network,
                "maxTimeoutSeconds": 300,
                "price": {
                    "amount": str(PRICE),
                    "asset": token,
                    "extra": {"name": "USD Coin", "version": "2"},
                },
            },
            "description": "weather",
            "mimeType": "application/json",
        }
    }
    calls = Calls()
    app = paid_app(calls)
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    return app


def sdk_client(account: Any, *, v1: bool = False) -> Any:
    """The SDK's x402Client for ``account``: v2 on every eip155 chain, or v1 on "anvil" only."""
    from x402 import x402Client
    from x402.mechanisms.evm.exact import ExactEvmClientScheme
    from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1

    client = x402Client()
    if v1:
        client.register_v1("anvil", ExactEvmSchemeV1(account))
    else:
        client.register("eip155:*", ExactEvmClientScheme(account))
    client.set_spend_controls(False)
    return client


class V1View(httpx.AsyncHTTPTransport):
    """A transport that hides the v2 ``PAYMENT-REQUIRED`` header: the client sees what a v1 server sends."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if response.status_code == 402:
            del response.headers["payment-required"]
        return response


def sdk_http(account: Any, *, v1: bool = False, timeout: float = 60.0) -> httpx.AsyncClient:
    """An httpx client that pays 402s with the official SDK transport."""
    from x402.http.clients.httpx import x402AsyncTransport

    client = sdk_client(account, v1=v1)
    inner = V1View() if v1 else httpx.AsyncHTTPTransport()
    return httpx.AsyncClient(transport=x402AsyncTransport(client, transport=inner), timeout=timeout)


# --- servers in their own processes ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def start_paid_server(
    options: dict[str, str], *, probe: str = "/free", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``paid_server.py`` with ``--key=value`` options; wait until ``probe`` answers 200."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "tests"), full_env.get("PYTHONPATH", "")]
    )
    argv = [sys.executable, str(Path(__file__).with_name("paid_server.py")), f"--port={port}"]
    argv += [f"--{key}={value}" for key, value in options.items()]
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"paid server did not start: {err}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server process and reap it."""
    proc.kill()
    proc.wait()


class OnShutdown:
    """Wrap an ASGI app so ``closers`` run on lifespan shutdown (in the server's own event loop)."""

    def __init__(self, app: Any, *closers: Any) -> None:
        self.app = app
        self.closers = closers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                for close in self.closers:
                    await close()
            return message

        await self.app(scope, wrapped, send)
