"""The ASGI application: routes from the route table, the middleware stack, and the lifespan.

Stack, outermost first: request id -> catch-all 500 -> error handlers -> router. The paid routes
are a mount at ``/api/x402/v1`` with their own error handlers, so a payment middleware wrapped
around that mount sees every handler outcome as a response (and settles only below 400). The same
gate instance (one per app: one settler per operator key) also sits behind the keyed entry of
``POST /api/v1/credits/purchase``, which authenticates before anything is paid.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from emailintel.dns import DnsResolver
from server.billing.purchases import recover_purchases
from server.db.hotpg import DatabaseUnavailable
from server.errors import (
    ApiError,
    MethodNotAllowed,
    NotFound,
    database_unavailable,
    error_response,
)
from server.middleware import CatchAllMiddleware, RequestIdMiddleware
from server.openapi import PaidRoute, openapi_document, paid_routes
from server.recursion import restore_recursion_limit
from server.redact import redact_client_logs
from server.routes import PAID_PREFIX, Operation, operations
from server.services import EmailValidator, Services
from server.settings import Settings, load_settings
from x402gw.ledger import Ledger

if TYPE_CHECKING:
    from emailintel.search.engines import SearchEngine
    from emailintel.smtp.prober import Prober

__all__ = ["MCP_PATH", "ManagedGate", "PaymentMiddlewareFactory", "create_app"]

MCP_PATH = "/mcp"

PaymentMiddlewareFactory = Callable[[ASGIApp, tuple[PaidRoute, ...]], ASGIApp]
"""Wraps the paid sub-application; receives the price metadata of every paid route."""


@runtime_checkable
class ManagedGate(Protocol):
    """A payment gate with resources: started with the app's lifespan and closed after it."""

    async def startup(self) -> None:
        """Prepare (migrate the ledger, reconcile) before the first request."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: ApiError
    if exc.status_code == 404:
        error = NotFound("route_not_found", f"No route for {request.url.path}.")
    elif exc.status_code == 405:
        error = MethodNotAllowed(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}.",
            headers=dict(exc.headers or {}),
        )
    else:
        error = ApiError(
            f"http_{exc.status_code}",
            str(exc.detail),
            status=exc.status_code,
            type="invalid_request_error" if exc.status_code < 500 else "api_error",
            headers=dict(exc.headers or {}),
        )
    return error_response(error, request)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(database_unavailable(), request)


HANDLERS: Mapping[Any, Callable[[Request, Exception], Any]] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    DatabaseUnavailable: _database_unavailable,
}


def _endpoint(op: Operation) -> Callable[[Request], Any]:
    if op.keyed:
        from server.http.keyed import guarded

        return guarded(op)
    return op.endpoint


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
"""Every method reaches a literal path's dispatcher, whose 405 then lists only what it serves."""


def _path_routes(ops: list[Operation]) -> list[Route]:
    """One Route per path, dispatching on the method, so a 405's ``Allow`` lists every method
    the path serves."""
    by_path: dict[str, dict[str, Callable[[Request], Any]]] = {}
    names: dict[str, str] = {}
    for op in ops:
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op)
        names.setdefault(op.path, op.operation_id)
    routes = []
    for path, methods in by_path.items():
        literal = "{" not in path
        if len(methods) == 1 and not literal:
            ((method, endpoint),) = methods.items()
            routes.append(Route(path, endpoint, methods=[method], name=names[path]))
        else:
            # a literal path (/campaigns/aggregate-stats) takes every method, so one it does not
            # serve is its 405, not a match of a parametrised sibling (/campaigns/{campaign_id})
            async def dispatch(request: Request, table: dict[str, Any] = methods) -> Response:
                method = "GET" if request.method == "HEAD" else request.method
                handler = table.get(method)
                if handler is None:
                    raise HTTPException(405, headers={"Allow": ", ".join(sorted(table))})
                response: Response = await handler(request)
                return response

            served = _ALL_METHODS if literal else list(methods)
            routes.append(Route(path, dispatch, methods=served, name=names[path]))
        if path.endswith("/") and path.rstrip("/") not in by_path:
            # the seed's trailing-slash paths (/templates/) answer without the slash too (no
            # redirect: a POST keeps its body); only the seed's form is documented
            route = routes[-1]
            routes.append(Route(path.rstrip("/"), route.endpoint, methods=route.methods, name=None))
    return routes


class _Hidden:
    """The paid mount without the wallet-paid paths: those reach the gate only through their
    keyed entry (authenticated first), never as ``/api/x402/v1/<path>``."""

    def __init__(self, app: ASGIApp, hidden: frozenset[str]) -> None:
        self.app = app
        self.hidden = hidden

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]  # the path the mount's router matches on
        if scope["type"] == "http" and path in self.hidden:
            raise NotFound("route_not_found", f"No route for {scope.get('path', '')}.")
        await self.app(scope, receive, send)


def _gated_routes(ops: tuple[Operation, ...]) -> list[BaseRoute]:
    """What the gate wraps: the paid routes (matched below the mount) and the handlers of the
    wallet-paid ones (matched at their own path, behind their keyed entry)."""
    routes: list[BaseRoute] = [*_path_routes([op for op in ops if op.paid])]
    routes += [
        Route(op.path, op.endpoint, methods=[op.method], name=f"{op.operation_id}_settled")
        for op in ops
        if op.wallet
    ]
    return routes


def _routes(
    settings: Settings,
    ops: tuple[Operation, ...],
    payment_middleware: PaymentMiddlewareFactory | None,
    gates: list[ManagedGate],
) -> list[BaseRoute]:
    document: dict[str, Any] = {}

    async def openapi(request: Request) -> JSONResponse:
        if not document:  # built on first use: schema generation is the slow part of start-up
            document.update(openapi_document(settings, ops))
        return JSONResponse(document)

    routes: list[BaseRoute] = [*_path_routes([op for op in ops if not op.gated])]
    routes.append(Route("/openapi.json", openapi, methods=["GET"], name="openapi"))
    from server.api.tracking import tracking_routes

    routes.extend(tracking_routes())  # public, outside the API document: links in emails
    from server.campaigns.unsubscribe import unsubscribe_routes

    routes.extend(unsubscribe_routes())  # public too: campaign one-click unsubscribe links
    # ONE gate for everything x402 prices: two would settle with the same operator key in two
    # settlers and race on the chain nonce.
    gated: ASGIApp = ExceptionMiddleware(Router(_gated_routes(ops)), handlers=dict(HANDLERS))
    gate: ASGIApp | None = None
    if payment_middleware is not None:
        gated = gate = payment_middleware(gated, paid_routes(settings, ops))
        if isinstance(gated, ManagedGate):
            gates.append(gated)
    from server.http.wallet import WalletEntry

    wallet = [op for op in ops if op.wallet]  # none without a gate (create_app drops them)
    routes.append(Mount(PAID_PREFIX, app=_Hidden(gated, frozenset(op.path for op in wallet))))
    ledger = getattr(gate, "ledger", None)
    for op in wallet:
        assert gate is not None
        entry = WalletEntry(op, gate, ledger if isinstance(ledger, Ledger) else None)
        routes.append(Route(op.path, entry, methods=[op.method], name=op.operation_id))
    return routes


async def _recover(gate: ManagedGate, svc: Services) -> None:
    """Book purchases a previous process settled but did not book (after the gate's start-up
    reconciled its settlements from the chain)."""
    from server.billing.credits import CreditStore

    ledger = getattr(gate, "ledger", None)
    if isinstance(ledger, Ledger):
        await recover_purchases(ledger, CreditStore(svc.db.engine))


def create_app(
    settings: Settings | None = None,
    *,
    payment_middleware: PaymentMiddlewareFactory | None = None,
    resolver: DnsResolver | None = None,
    validator: EmailValidator | None = None,
    prober: Prober | None = None,
    search: SearchEngine | None = None,
    smtp_routes: bool = True,
) -> Starlette:
    """Build the app; migrations run when the lifespan starts, engines close when it stops.

    ``resolver`` (default: from ``EMAILINTEL_NAMESERVERS``) serves readiness and validation;
    ``validator`` replaces emailintel's ``Validator``; ``prober`` (SMTP) and ``search`` (LinkedIn
    backend) default to emailintel's, configured from ``EMAILINTEL_*``. A payment gate with
    ``startup``/``aclose`` (:class:`ManagedGate`) follows the lifespan. ``smtp_routes=False``
    leaves the SMTP routes (verify, find) out of the route table and the OpenAPI document; so
    does the absence of a payment gate for the wallet-paid routes (credits are never sold
    unpaid, even where ``--unpaid`` serves the x402 routes free).

    Lowers the interpreter's recursion limit back to CPython's default (see server.recursion).
    """
    restore_recursion_limit()
    redact_client_logs()  # request URLs (with provider keys) never reach the log whole
    settings = settings or load_settings()
    svc = Services.build(
        settings, resolver=resolver, validator=validator, prober=prober, search=search
    )
    ops = tuple(
        op
        for op in operations()
        if (smtp_routes or not op.smtp) and (payment_middleware is not None or not op.wallet)
    )
    gates: list[ManagedGate] = []
    from server.mcp.server import McpTools, build_server, http_app
    from server.mcp.tools import tools as mcp_tools

    mcp = McpTools(ops, mcp_tools(), paid=payment_middleware is not None)
    mcp_server = build_server(mcp)
    mcp_http = http_app(mcp_server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from server.jobs.setup import build_worker, embedded
        from server.mail.setup import build_mail_worker, embedded_mail

        await svc.db.migrate()
        try:
            for gate in gates:
                await gate.startup()
                await _recover(gate, svc)
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(mcp_http.running())
                if embedded(settings):  # SQLite: jobs run here, no extra process
                    await stack.enter_async_context(build_worker(svc.jobs, settings))
                if settings.inbound_enabled:  # BaviMail's inbound SMTP endpoint
                    from server.mail.inbound_smtp import inbound_server

                    await stack.enter_async_context(
                        inbound_server(
                            svc.inbound.handler(), settings.inbound_host, settings.inbound_port
                        )
                    )
                if settings.webhooks_dispatch:
                    await stack.enter_async_context(svc.webhook_dispatcher().running())
                if embedded_mail(settings):  # a relay on SQLite: mail is sent from here too
                    mail = svc.sending
                    from server.campaigns.sequencer import sequencer_loop
                    from server.campaigns.stops import on_refused

                    worker = build_mail_worker(svc.db, settings, mail.suppression, on_refused)
                    await stack.enter_async_context(worker)

                    campaigns = sequencer_loop(svc)  # and campaigns queue their messages here
                    if campaigns is not None:
                        await stack.enter_async_context(campaigns)
                yield
        finally:
            for gate in gates:
                await gate.aclose()
            await svc.close()

    routes = _routes(settings, ops, payment_middleware, gates)
    # the API-action MCP server (Streamable HTTP); its tools call back into this app
    routes.append(Route(MCP_PATH, mcp_http, methods=["GET", "POST", "DELETE"]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware), Middleware(CatchAllMiddleware)],
        exception_handlers=dict(HANDLERS),
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.settings = settings
    app.state.operations = ops
    mcp.app = app
    app.state.mcp_server = mcp_server
    return app
