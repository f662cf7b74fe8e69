"""Pure ASGI x402 payment middleware: 402 challenges, verify, one use per authorization, settle, serve.

Default flow: verify, reserve the authorization in the ledger, run the handler with its whole
response buffered, settle, then send (never paid content without settlement). ``upfront`` routes
settle before the handler. Works in front of any ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from x402gw import _flow
from x402gw._flow import Offers, Problem
from x402gw.config import PaymentConfig, PricedRoute
from x402gw.errors import ChainError, X402Error
from x402gw.exact_evm import SETTLEMENT_PENDING
from x402gw.facilitator import (
    FacilitatorError,
    FacilitatorUnavailable,
    LocalFacilitator,
    reconcile_ledger,
)
from x402gw.ledger import (
    AuthorizationInUse,
    LedgerError,
    LedgerUnavailable,
    PaymentIdentifierConflict,
    PaymentIdentifierInUse,
    PaymentRecord,
    StoredResponse,
    request_fingerprint,
)
from x402gw.wire import (
    AnyPaymentPayload,
    ExactEvmPayload,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("x402gw")
_BACKEND_DOWN = (ChainError, FacilitatorUnavailable, LedgerUnavailable)


class _TooLarge(Exception):
    pass


class _Unavailable(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Capture:
    """An ASGI ``send`` that keeps the whole response in memory, up to a size cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.too_large = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if len(self.body) > self.cap:
                self.too_large = True
                raise _TooLarge
            if not message.get("more_body", False):
                self.complete = True


def _unavailable(exc: Exception) -> _Unavailable:
    if isinstance(exc, FacilitatorError):
        return _Unavailable(Problem(502, "facilitator_error", str(exc)))
    return _Unavailable(Problem(503, "payment_backend_unavailable", str(exc)))


class PaymentMiddleware:
    """``PaymentMiddleware(app, config)``: charge the routes in ``config``; pass everything else through."""

    def __init__(self, app: ASGIApp, config: PaymentConfig) -> None:
        self.app = app
        self.config = config
        self._started = False
        self._start_lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """Migrate the ledger and reconcile settlements a previous process left open (idempotent)."""
        async with self._start_lock:
            if self._started:
                return
            ledger = self.config.ledger
            await ledger.migrate()
            facilitator = self.config.facilitator
            if self.config.reconcile_on_startup and isinstance(facilitator, LocalFacilitator):
                summary = await reconcile_ledger(ledger, facilitator.client)
                if summary.settled or summary.failed or summary.errors:
                    log.info("x402gw reconcile: %s", summary)
            self._started = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        path = scope.get("path", "/")
        route = None if method == "OPTIONS" else self.config.route_for(method, path)
        if route is None and method == "HEAD":
            route = self.config.route_for("GET", path)  # HEAD runs the GET handler: same price
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._paid(route, scope, receive, send)
        except _Unavailable as exc:
            await _send(send, *_flow.error_response(exc.problem))

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await self.startup()
            return message

        return wrapped

    # --- the paid request --------------------------------------------------------------------

    async def _paid(self, route: PricedRoute, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        if not self._started:
            try:
                await self.startup()
            except (*_BACKEND_DOWN, LedgerError) as exc:
                raise _unavailable(exc) from exc
        offers = _flow.offers_for(route, _flow.resource_url(scope))
        challenge = self._challenger(offers, send)
        payment = _flow.read_payment(scope.get("headers") or [], config.max_header_bytes)
        if payment is None:
            await challenge(Problem(402, _flow.PAYMENT_REQUIRED_ERROR, "", True))
            return
        if isinstance(payment, Problem):
            await challenge(payment)
            return
        requirements = _flow.match_offer(payment, offers)
        if isinstance(requirements, Problem):
            await challenge(requirements)
            return
        pid = _flow.payment_identifier(payment)
        if isinstance(pid, Problem):
            await _send(send, *_flow.error_response(pid))
            return
        body = await _read_body(receive, config.max_request_body_bytes)
        if body is None:
            await _send(send, *_flow.error_response(Problem(413, "request_body_too_large")))
            return
        query = scope.get("query_string") or b""
        target = scope.get("path", "/") + ("?" + query.decode("latin-1") if query else "")
        fingerprint = request_fingerprint(scope["method"], target, body)
        if pid is not None:
            stored = await self._replay(pid, fingerprint, send)
            if stored:
                return
        try:
            verified = await config.facilitator.verify(payment, requirements)
        except (*_BACKEND_DOWN, FacilitatorError) as exc:
            raise _unavailable(exc) from exc
        if not verified.is_valid:
            reason = verified.invalid_reason or "invalid_payment"
            await challenge(Problem(402, reason, verified.invalid_message or "", True))
            return
        record = await self._reserve(
            route,
            payment,
            requirements,
            _flow.ledger_resource(scope["method"], target),
            fingerprint,
            pid,
            send,
            challenge,
        )
        if record is None:
            return
        replay = _replay_receive(body, receive)
        if route.upfront:
            await self._upfront(record, payment, requirements, offers, scope, replay, send)
        else:
            await self._deferred(record, payment, requirements, offers, scope, replay, send)

    def _challenger(self, offers: Offers, send: Send) -> Callable[[Problem], Awaitable[None]]:
        async def challenge(problem: Problem) -> None:
            await _send(
                send,
                *_flow.challenge_response(offers, problem, self.config.declare_payment_identifier),
            )

        return challenge

    async def _replay(self, pid: str, fingerprint: str, send: Send) -> bool:
        try:
            stored = await self.config.ledger.replay(pid, fingerprint)
        except PaymentIdentifierConflict as exc:
            await _send(
                send, *_flow.error_response(Problem(409, "payment_identifier_conflict", str(exc)))
            )
            return True
        except PaymentIdentifierInUse as exc:
            await _send(
                send, *_flow.error_response(Problem(409, "payment_identifier_in_use", str(exc)))
            )
            return True
        except LedgerUnavailable as exc:
            raise _unavailable(exc) from exc
        if stored is None:
            return False
        await _send_stored(send, stored)
        return True

    async def _reserve(
        self,
        route: PricedRoute,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        resource: str,
        fingerprint: str,
        pid: str | None,
        send: Send,
        challenge: Callable[[Problem], Awaitable[None]],
    ) -> PaymentRecord | None:
        auth = ExactEvmPayload.parse(payment.payload).authorization  # verified, so it parses
        try:
            return await self.config.ledger.reserve(
                scheme="exact",
                network=route.network,
                asset=route.token.address,
                payer=auth.from_,
                pay_to=route.pay_to,
                amount=route.amount,
                nonce=auth.nonce,
                valid_before=int(auth.valid_before),
                resource=resource,
                fingerprint=fingerprint,
                payment_identifier=pid,
            )
        except AuthorizationInUse:
            await challenge(
                Problem(402, "authorization_in_use", "this authorization is already in use", True)
            )
            return None
        except PaymentIdentifierInUse as exc:
            await _send(
                send, *_flow.error_response(Problem(409, "payment_identifier_in_use", str(exc)))
            )
            return None
        except LedgerError as exc:
            raise _unavailable(exc) from exc

    async def _settle(
        self,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
    ) -> SettleResponse:
        """Settle once and bring the ledger record along; raises :class:`_Unavailable` when down.

        The record moves to ``settling`` before anything is sent (write-ahead): whatever happens
        after, a restart reconciles it from the chain instead of leaving it ``verified``.
        """
        ledger = self.config.ledger
        seen: list[str] = []

        async def on_broadcast(tx_hash: str) -> None:
            seen.append(tx_hash)
            await ledger.record_broadcast(record.id, tx_hash)

        try:
            await ledger.mark_settling(record.id)
        except LedgerError as exc:
            await _quietly(ledger.release(record.id))
            raise _unavailable(exc) from exc
        try:
            result = await self.config.facilitator.settle(
                payment, requirements, on_broadcast=on_broadcast
            )
        except (*_BACKEND_DOWN, FacilitatorError) as exc:
            # Unknown whether anything reached the chain: the record stays `settling`, keeping
            # the authorization blocked; reconciliation decides from the on-chain nonce state.
            raise _unavailable(exc) from exc
        try:
            if result.success:
                await ledger.mark_settled(record.id, result.transaction)
            elif result.error_reason == SETTLEMENT_PENDING:
                if result.transaction and not seen:
                    await ledger.record_broadcast(record.id, result.transaction)
            else:
                await ledger.mark_failed(record.id, result.error_reason or "settlement_failed")
        except LedgerError as exc:
            log.error("x402gw: ledger update after settlement failed: %s", exc)
        return result

    async def _deferred(
        self,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        offers: Offers,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        ledger = self.config.ledger
        capture = _Capture(self.config.max_response_bytes)
        try:
            await self.app(scope, receive, capture.send)
        except _TooLarge:
            pass
        except Exception:
            log.exception("x402gw: handler failed; payment not settled")
            await _quietly(ledger.release(record.id))
            await _send(send, *_flow.error_response(Problem(500, "handler_error", "not charged")))
            return
        if capture.too_large or capture.status is None:
            await _quietly(ledger.release(record.id))
            code = "response_too_large" if capture.too_large else "no_response"
            await _send(send, *_flow.error_response(Problem(500, code, "not charged")))
            return
        if capture.status >= 400:
            await _quietly(ledger.release(record.id))
            await _send(send, capture.status, capture.headers, bytes(capture.body))
            return
        result = await self._settle(record, payment, requirements)
        version = payment.x402_version
        if result.success:
            headers = _flow.paid_headers(capture.headers, result, version)
            response = (capture.status, headers, bytes(capture.body))
        else:
            response = _flow.challenge_response(
                offers,
                _flow.settle_problem(result),
                self.config.declare_payment_identifier,
                settle=result,
                version=version,
            )
        if record.payment_identifier is not None and result.error_reason != SETTLEMENT_PENDING:
            await _quietly(
                ledger.store_response(
                    record.id, response[0], _str_headers(response[1]), response[2]
                )
            )
        await _send(send, *response)

    async def _upfront(
        self,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        offers: Offers,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        result = await self._settle(record, payment, requirements)
        version = payment.x402_version
        if not result.success:
            await _send(
                send,
                *_flow.challenge_response(
                    offers,
                    _flow.settle_problem(result),
                    self.config.declare_payment_identifier,
                    settle=result,
                    version=version,
                ),
            )
            return
        keep = _Capture(self.config.max_response_bytes)
        started = False

        async def paid_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = _flow.paid_headers(message.get("headers", []), result, version)
            if not keep.too_large:
                with contextlib.suppress(_TooLarge):
                    await keep.send(message)
            await send(message)

        try:
            await self.app(scope, receive, paid_send)
        except Exception:
            log.exception("x402gw: handler failed after an upfront settlement")
            if not started:
                status, headers, body = _flow.error_response(Problem(500, "handler_error", "paid"))
                await _send(send, status, _flow.paid_headers(headers, result, version), body)
            return
        if record.payment_identifier is not None and keep.complete and keep.status is not None:
            await _quietly(
                self.config.ledger.store_response(
                    record.id, keep.status, _str_headers(keep.headers), bytes(keep.body)
                )
            )


# --------------------------------------------------------------------------------------------


async def _read_body(receive: Receive, cap: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > cap:
            return None
        if not message.get("more_body", False):
            break
    return bytes(body)


def _replay_receive(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _flow.with_length(headers, len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stored(send: Send, stored: StoredResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
    await _send(send, stored.status, headers, stored.body)


def _str_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Run a best-effort ledger update; a failure is logged, never turned into a 500."""
    try:
        await awaitable
    except (X402Error, LedgerError) as exc:
        log.error("x402gw: ledger update failed: %s", exc)
