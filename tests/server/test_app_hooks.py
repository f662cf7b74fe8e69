"""App wiring: migrations at start, engines closed at stop, and the payment-middleware hook."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import pytest_asyncio
from conftest import serving
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from server.app import create_app
from server.db import Database
from server.db.migrate import current_revision, head_revision
from server.db.queries import for_dialect
from server.errors import ApiError, error_response
from server.openapi import PaidRoute
from server.settings import Settings, load_settings


@pytest.mark.unmigrated
async def test_lifespan_migrates_and_disposes(
    backend_settings: Settings, stub_resolver: DnsResolver
) -> None:
    app = create_app(backend_settings, resolver=stub_resolver)
    engine = app.state.services.db.engine
    async with serving(app):
        async with engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head_revision()
        assert engine.pool.checkedin() >= 1
    assert engine.pool.checkedin() == 0  # disposed at shutdown


class GateMiddleware:
    """A stand-in payment gate: 402 without ``X-Payment``; records what handlers answered."""

    def __init__(self, app: ASGIApp, routes: tuple[PaidRoute, ...]) -> None:
        self.app = app
        self.routes = routes
        self.statuses: list[int] = []
        GateMiddleware.last = self

    last: GateMiddleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if b"x-teapot" in headers:
            raise HTTPException(418, "I am a teapot")
        if b"x-payment" not in headers:
            price = next(r.price for r in self.routes if r.path == scope["path"])
            error = ApiError(
                "payment_required", f"Pay {price}.", status=402, type="payment_required"
            )
            await error_response(error, Request(scope))(scope, receive, send)
            return

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, record)


@pytest_asyncio.fixture(loop_scope="function")
async def gated(settings: Settings, stub_resolver: DnsResolver) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(
        create_app(settings, resolver=stub_resolver, payment_middleware=GateMiddleware)
    ) as client:
        yield client


async def test_payment_hook_wraps_only_paid_routes(gated: httpx.AsyncClient) -> None:
    gate = GateMiddleware.last
    assert {(r.path, r.upfront) for r in gate.routes} == {
        ("/api/x402/v1/email/validate", False),
        ("/api/x402/v1/email/verify", False),
        ("/api/x402/v1/email/find", False),
        ("/api/x402/v1/linkedin/find-url", False),
        ("/api/x402/v1/prospects/search", False),
        ("/api/v1/credits/purchase", True),  # the keyed wallet top-up, through the same gate
    }
    assert (await gated.get("/health")).status_code == 200
    unpaid = await gated.post("/api/x402/v1/prospects/search", json={"tags": ["a"]})
    error = assert_envelope(unpaid, 402, "payment_required", "payment_required")
    assert error["message"] == "Pay $0.012."
    paid = await gated.post(
        "/api/x402/v1/prospects/search", json={"tags": ["a"]}, headers={"X-Payment": "x"}
    )
    assert paid.status_code == 200
    bad = await gated.post(
        "/api/x402/v1/prospects/search", content=b"{", headers={"X-Payment": "x"}
    )
    assert_envelope(bad, 400, "invalid_request_error", "invalid_json")
    assert gate.statuses == [200, 400]  # the gate sees handler errors as responses


def test_one_gate_instance_prices_everything(
    settings: Settings, stub_resolver: DnsResolver
) -> None:
    """The paid mount and the keyed purchase share one gate (two would run two settlers with
    the same operator key, racing on its chain nonce)."""
    from starlette.routing import Mount, Route

    from server.http.wallet import WalletEntry

    built: list[GateMiddleware] = []

    def factory(app: ASGIApp, routes: tuple[PaidRoute, ...]) -> GateMiddleware:
        built.append(GateMiddleware(app, routes))
        return built[-1]

    app = create_app(settings, resolver=stub_resolver, payment_middleware=factory)
    assert len(built) == 1
    [mount] = [r for r in app.routes if isinstance(r, Mount)]
    [entry] = [r.app for r in app.routes if isinstance(r, Route) and isinstance(r.app, WalletEntry)]
    assert entry.gate is built[0]
    assert mount.app.app is built[0]  # behind the filter that hides the purchase path


async def test_other_http_exceptions_keep_their_status(gated: httpx.AsyncClient) -> None:
    response = await gated.post("/api/x402/v1/prospects/search", headers={"X-Teapot": "1"})
    error = assert_envelope(response, 418, "invalid_request_error", "http_418")
    assert error["message"] == "I am a teapot"


class _RpcHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "nope"}}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rpc_error_server() -> Iterator[str]:
    """A loopback JSON-RPC endpoint that answers every call with a JSON-RPC error object."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RpcHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_ready_503_on_rpc_error_answer(
    sqlite_url: str, stub_resolver: DnsResolver, rpc_error_server: str
) -> None:
    settings = load_settings(env_file=None, database_url=sqlite_url, rpc_url=rpc_error_server)
    async with serving(create_app(settings, resolver=stub_resolver)) as c:
        response = await c.get("/api/v1/ready")
    assert response.status_code == 503
    assert "unexpected eth_chainId answer" in response.json()["checks"]["rpc"]["detail"]


def test_schema_needs_postgresql(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="only be set for PostgreSQL"):
        Database(sqlite_url, schema="s")


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unsupported database backend"):
        for_dialect("mysql")
