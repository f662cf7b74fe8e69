"""The keyed API's guard pipeline around every ``api_key``/``jwt`` operation, in this order:

authenticate (401) -> session-only operations refuse keys (403) -> the key's scopes (403) -> the
plan (403) -> the per-key rate limit (429, headers on every response) -> Idempotency-Key (replay,
409 in flight, 422 reused with another body) -> the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_body
from server.auth.principal import Principal
from server.auth.scopes import allows
from server.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    RateLimited,
    Unprocessable,
    error_response,
)
from server.http.idempotency_rules import Decision, fingerprint, valid_key
from server.routes import Operation
from server.services import KeyedServices, Services, services

__all__ = ["KeyedContext", "KeyedHandler", "admit", "guarded", "idempotent"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NOT_REPLAYED = frozenset({"content-length", "x-request-id", "date", "server"})
_KEPT_STATUSES = range(200, 500)
_TRANSIENT = frozenset({409, 429})


@dataclass(frozen=True)
class KeyedContext:
    """What a keyed handler gets besides the request."""

    principal: Principal
    services: Services
    op: Operation

    @property
    def keyed(self) -> KeyedServices:
        """Accounts, credits, idempotency, auth, limits."""
        return self.services.keyed

    @property
    def user_id(self) -> str:
        """The caller's user id (every resource query filters on it)."""
        return self.principal.user.id


KeyedHandler = Callable[[Request, KeyedContext], Awaitable[Response]]


def guarded(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint running ``op.endpoint`` behind the guard pipeline."""
    handler: KeyedHandler = op.endpoint

    async def endpoint(request: Request) -> Response:
        principal, limit_headers = await admit(op, request)
        try:
            ctx = KeyedContext(principal, services(request), op)
            response = await idempotent(request, ctx, handler)
        except ApiError as exc:
            exc.headers = {**limit_headers, **exc.headers}
            raise
        response.headers.update(limit_headers)
        return response

    endpoint.__doc__ = op.endpoint.__doc__
    return endpoint


async def admit(op: Operation, request: Request) -> tuple[Principal, dict[str, str]]:
    """Authenticate, authorise and count the request (every guard before Idempotency-Key):
    the caller and the rate-limit headers every response carries; ApiError when refused."""
    svc = services(request)
    principal = await svc.keyed.authenticator.authenticate(request)
    _authorise(op, principal, request.method)
    quota = await svc.keyed.limiter.hit(principal.rate_identity, principal.plan.rate_limit)
    limit_headers = quota.headers() if quota is not None else {}
    if quota is not None and not quota.allowed:
        error = RateLimited(
            "rate_limited",
            f"Too many requests: {quota.limit} per {quota.window} s on this "
            f"{'key' if principal.key else 'account'}.",
        )
        error.headers = {**limit_headers, **error.headers}
        raise error
    return principal, limit_headers


def _authorise(op: Operation, principal: Principal, method: str) -> None:
    if op.access == "jwt" and principal.via != "jwt":
        raise Forbidden(
            "session_required",
            "This operation needs a session token; API keys cannot manage API keys.",
        )
    if op.scope is not None:
        write = method not in SAFE_METHODS
        if not allows(principal.scopes, op.scope, write=write):
            level = "write" if write else "read"
            raise Forbidden(
                "insufficient_scope", f"This API key lacks the {op.scope}:{level} scope."
            )
    if not principal.plan.allows(op.price_key):
        raise Forbidden(
            "plan_forbidden",
            f"The {principal.plan_name} plan does not include this operation; upgrade to use it.",
        )


async def idempotent(request: Request, ctx: KeyedContext, handler: KeyedHandler) -> Response:
    """Run ``handler`` under the request's Idempotency-Key (if any): a repeat replays the stored
    answer, another body under the key is a 422, one still running a 409."""
    key = request.headers.get("idempotency-key")
    if key is None or request.method in SAFE_METHODS:
        return await handler(request, ctx)
    if not valid_key(key):
        raise InvalidRequest(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.",
            param="Idempotency-Key",
        )
    body = await read_body(request)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    fp = fingerprint(request.method, path, body)
    store = ctx.keyed.idempotency
    claim = await store.claim(ctx.user_id, key, fp)
    if claim.decision is Decision.REPLAY:
        headers = {**(claim.headers or {}), "Idempotent-Replayed": "true"}
        return Response(claim.body or b"", status_code=claim.status or 200, headers=headers)
    if claim.decision is Decision.MISMATCH:
        raise Unprocessable(
            "idempotency_key_reused",
            "This Idempotency-Key was used with another request; use a new key.",
            param="Idempotency-Key",
        )
    if claim.decision is Decision.IN_FLIGHT:
        raise Conflict(
            "idempotency_in_progress",
            "A request with this Idempotency-Key is still running; retry later.",
        )
    try:
        response = await handler(request, ctx)
    except ApiError as exc:
        response = error_response(exc, request)
    except BaseException:
        await store.release(ctx.user_id, key)
        raise
    body_bytes = getattr(response, "body", None)
    status = response.status_code
    if isinstance(body_bytes, bytes) and status in _KEPT_STATUSES and status not in _TRANSIENT:
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_REPLAYED}
        await store.finish(ctx.user_id, key, status, kept, body_bytes)
    else:
        await store.release(ctx.user_id, key)
    return response
