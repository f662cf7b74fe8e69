"""The keyed entry of a wallet-paid operation (buying credits): every guard, then the one gate.

Order: authenticate (401), scopes and plan (403), the per-key rate limit (429) and the body
(400) are all checked before the request reaches the x402 gate, so a refusal never costs money.
The gate then sees the request bound to the caller's account (server.billing.purchases) and
settles before the handler books. Idempotency-Key is not used here: the payment is the key (the
gate replays a repeated payment's answer). After the gate answers anything but a success, the
gate's record of the payment sent is read: a payment settled for this account is booked then
(once per reference), so a booking that failed after settlement is made by the next repeat.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.parsing import read_body, read_json
from server.billing.credits import UnknownAccount
from server.billing.pricing import PURCHASE_KEY
from server.billing.purchases import (
    Binding,
    binding_from_resource,
    binding_query,
    book,
    purchase_reference,
)
from server.http.keyed import admit
from server.resources.purchase import SCOPE_KEY, PurchaseContext, PurchaseRequest
from server.routes import Operation
from server.services import services
from server.settings import Settings
from x402gw.errors import X402Error
from x402gw.ledger import Ledger, State
from x402gw.wire import PAYMENT_HEADERS, ExactEvmPayload, decode_payment_payload

__all__ = ["WalletEntry", "sent_authorization"]

log = logging.getLogger("bavlio.purchases")


def sent_authorization(
    headers: list[tuple[bytes, bytes]], settings: Settings
) -> tuple[str, str, str] | None:
    """(reference, payer, nonce) of the exact-EVM payment the gate will read
    (``PAYMENT-SIGNATURE`` first, then ``X-PAYMENT``), or None when there is none it could
    accept."""
    for name in PAYMENT_HEADERS:
        raw = next((v for k, v in headers if k.lower() == name.lower().encode()), None)
        if raw is None:
            continue
        try:
            auth = ExactEvmPayload.parse(decode_payment_payload(raw).payload).authorization
            return (
                purchase_reference(settings.network, settings.asset, auth.from_, auth.nonce),
                auth.from_,
                auth.nonce,
            )
        except (X402Error, ValueError):
            return None
    return None


class WalletEntry:
    """ASGI endpoint of ``op``: the keyed guards, then ``gate`` (without one the route is not
    served: credits are never sold unpaid); ``ledger`` is the gate's, read after a refusal.

    The last body message is held until the gate returns: an upfront gate keeps the answer
    after the handler finished, so a client repeating the payment as soon as it has the answer
    gets it replayed (not "in use")."""

    def __init__(self, op: Operation, gate: ASGIApp, ledger: Ledger | None) -> None:
        self.op = op
        self.gate = gate
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        principal, limit_headers = await admit(self.op, request)
        body = await read_body(request)
        if body.strip():
            await read_json(request, PurchaseRequest)
        settings = services(request).settings
        binding = Binding(principal.user.id, settings.price_table()[PURCHASE_KEY].credits)
        sent = sent_authorization(list(scope.get("headers") or []), settings)
        ctx = PurchaseContext(binding, *(sent or ()))
        gate_scope: MutableMapping[str, Any] = {
            **scope,
            "query_string": binding_query(binding),
            SCOPE_KEY: ctx,
        }

        held: list[Message] = []

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                if int(message["status"]) >= 300 and ctx.reference is not None:
                    await self._book_if_settled(request, ctx)  # before the client hears back
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in limit_headers.items()]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                held.append(message)  # sent once the gate has kept the answer for repeats
                return
            await send(message)

        try:
            await self.gate(gate_scope, _replaying(body, receive), send_with_limits)
        finally:
            for message in held:
                await send(message)

    async def _book_if_settled(self, request: Request, ctx: PurchaseContext) -> None:
        """Book a payment the gate settled for this account but whose handler did not book
        (it failed, or its process died): repeating the payment recovers the credits."""
        if self.ledger is None or ctx.payer is None or ctx.nonce is None or not ctx.reference:
            return
        settings = services(request).settings
        try:
            record = await self.ledger.find_live_by_authorization(
                settings.network, settings.asset, ctx.payer, ctx.nonce
            )
        except X402Error as exc:
            log.warning("bavlio: purchase %s not checked: %s", ctx.reference, exc)
            return
        if record is None or record.state is not State.SETTLED:
            return
        recorded = binding_from_resource(record.resource)
        if recorded is None or recorded.user_id != ctx.binding.user_id:
            return  # settled for another account: that request's answer, not this caller's
        try:  # the pack the payment was made for, even if the price changed since
            if await book(services(request).keyed.credits, recorded, ctx.reference):
                log.warning("bavlio: purchase %s booked on a repeat", ctx.reference)
        except (SQLAlchemyError, OSError, UnknownAccount) as exc:
            # Still failing: a later repeat, or the recovery at start-up, books it.
            log.error("bavlio: purchase %s still not booked: %s", ctx.reference, exc)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the gate: the body already read, once, then the client's messages."""
    pending: list[bytes] = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay
