"""``bavlio pay``: call an x402-paid URL, paying the 402 with an EIP-3009 authorization.

Speaks x402 v2 (``PAYMENT-REQUIRED`` -> ``PAYMENT-SIGNATURE`` -> ``PAYMENT-RESPONSE``) with the
``exact`` EVM scheme; the key comes from ``BAVLIO_PAYER_KEY``. A spend cap guards against a
server asking for more than expected.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass

import httpx
import pydantic_core
from eth_account import Account

from x402gw.errors import X402Error
from x402gw.exact_evm import Authorization, Domain, sign_authorization
from x402gw.networks import NetworkRegistry
from x402gw.wire import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    PaymentPayload,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    decode_payment_required,
    decode_settle_response,
    encode_payment_payload,
)

__all__ = [
    "DEFAULT_MAX_AMOUNT",
    "PaidResponse",
    "PayError",
    "choose_offer",
    "parse_header",
    "pay",
    "sign_offer",
]

DEFAULT_MAX_AMOUNT = 1_000_000
"""Refuse offers above this many atomic units (1 token at 6 decimals) unless raised."""
KEY_VARIABLE = "BAVLIO_PAYER_KEY"
REQUEST_TIMEOUT = 120.0  # settlement waits for a receipt before the paid response arrives


class PayError(Exception):
    """A payment that could not be made; the message is one line for the user."""


@dataclass(frozen=True)
class PaidResponse:
    """The final response, and the settlement when a payment was made."""

    status: int
    body: bytes
    headers: httpx.Headers
    settlement: SettleResponse | None
    offer: PaymentRequirements | None


def payer_key(env: dict[str, str] | None = None) -> str:
    """The payer's private key from ``BAVLIO_PAYER_KEY``; raises :class:`PayError` when unset/bad."""
    value = (os.environ if env is None else env).get(KEY_VARIABLE, "").strip()
    if not value:
        raise PayError(f"{KEY_VARIABLE} is not set (the private key that pays)")
    try:
        Account.from_key(value)
    except (ValueError, TypeError):
        raise PayError(f"{KEY_VARIABLE} is not a 32-byte hex private key") from None
    return value


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` (curl's ``-H``) as (name, value); PayError when it is not one header."""
    name, colon, value = text.partition(":")
    value = value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name.strip()):
        raise PayError(f"not a header (Name: value): {text[:100]!r}")
    if any(c in value for c in "\r\n\0") or len(value) > 8192:
        raise PayError(f"header {name.strip()} has a value no HTTP header can carry")
    return name.strip(), value


def choose_offer(offers: list[PaymentRequirements], max_amount: int) -> PaymentRequirements:
    """The cheapest ``exact`` EVM offer within ``max_amount`` atomic units."""
    usable = []
    for offer in offers:
        if offer.scheme != "exact" or not offer.network.startswith("eip155:"):
            continue
        if not offer.amount.isdigit() or not {"name", "version"} <= set(offer.extra):
            continue
        usable.append(offer)
    if not usable:
        raise PayError("the server offers no exact EVM payment this client can make")
    best = min(usable, key=lambda o: int(o.amount))
    if int(best.amount) > max_amount:
        raise PayError(
            f"the server asks {best.amount} atomic units of {best.asset}, above the cap "
            f"{max_amount} (raise it with --max-amount)"
        )
    return best


def sign_offer(
    offer: PaymentRequirements, key: str, resource: ResourceInfo | None, now: float | None = None
) -> PaymentPayload:
    """A v2 payment for ``offer``: a fresh random nonce, valid from now for the offer's timeout."""
    account = Account.from_key(key)
    issued = int(time.time() if now is None else now)
    authorization = Authorization(
        from_address=account.address,
        to=offer.pay_to,
        value=int(offer.amount),
        valid_after=max(issued - 600, 0),
        valid_before=issued + offer.max_timeout_seconds,
        nonce=secrets.token_bytes(32),
    )
    domain = Domain(
        name=str(offer.extra["name"]),
        version=str(offer.extra["version"]),
        chain_id=NetworkRegistry().chain_id(offer.network),
        verifying_contract=offer.asset,
    )
    signature = sign_authorization(domain, authorization, key)
    payload = {
        "signature": "0x" + signature.hex(),
        "authorization": {
            "from": authorization.from_address,
            "to": authorization.to,
            "value": str(authorization.value),
            "validAfter": str(authorization.valid_after),
            "validBefore": str(authorization.valid_before),
            "nonce": "0x" + authorization.nonce.hex(),
        },
    }
    return PaymentPayload(payload=payload, accepted=offer, resource=resource)


async def pay(
    method: str,
    url: str,
    body: bytes | None,
    key: str,
    *,
    max_amount: int = DEFAULT_MAX_AMOUNT,
    client: httpx.AsyncClient | None = None,
    headers: dict[str, str] | None = None,
) -> PaidResponse:
    """Send the request (with ``headers``, e.g. an API key); on a 402, pay the chosen offer
    once and resend it."""
    headers = {
        **({"content-type": "application/json"} if body is not None else {}),
        **(headers or {}),
    }
    own = client is None
    http = client or httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
    try:
        first = await http.request(method, url, content=body, headers=headers)
        if first.status_code != 402:
            return PaidResponse(first.status_code, first.content, first.headers, None, None)
        challenge = first.headers.get(PAYMENT_REQUIRED)
        if challenge is None:
            raise PayError("402 without a PAYMENT-REQUIRED header (x402 v2 is required)")
        try:
            required = decode_payment_required(challenge)
        except X402Error as exc:
            raise PayError(f"unreadable PAYMENT-REQUIRED header: {exc}") from None
        offer = choose_offer(required.accepts, max_amount)
        payment = sign_offer(offer, key, required.resource)
        paid_headers = {**headers, PAYMENT_SIGNATURE: encode_payment_payload(payment)}
        second = await http.request(method, url, content=body, headers=paid_headers)
    except httpx.HTTPError as exc:
        raise PayError(f"request to {url} failed: {exc.__class__.__name__}: {exc}") from None
    finally:
        if own:
            await http.aclose()
    settlement = None
    raw = second.headers.get(PAYMENT_RESPONSE)
    if raw is not None:
        try:
            settlement = decode_settle_response(raw)
        except X402Error as exc:
            raise PayError(f"unreadable PAYMENT-RESPONSE header: {exc}") from None
    if second.status_code == 402:
        reason = _reason(second)
        raise PayError(f"payment refused: {reason}")
    return PaidResponse(second.status_code, second.content, second.headers, settlement, offer)


_MAX_REASON_BODY = 64 * 1024


def _reason(response: httpx.Response) -> str:
    try:
        required = decode_payment_required(response.headers.get(PAYMENT_REQUIRED, ""))
    except X402Error:
        required = None
    if required is not None and required.error:
        return required.error
    try:  # a hostile server's body: bounded, parsed by pydantic's (depth-limited) parser
        data = pydantic_core.from_json(response.content[:_MAX_REASON_BODY])
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):  # the error envelope
        error = error.get("code") or error.get("message")
    return str(error)[:200] if isinstance(error, str | int) and error != "" else "no reason given"


def receipt(paid: PaidResponse) -> dict[str, object]:
    """A JSON-ready summary of the settlement: transaction, payer, network, amount."""
    if paid.settlement is None:
        return {"paid": False, "status": paid.status}
    return {
        "paid": paid.settlement.success,
        "status": paid.status,
        "transaction": paid.settlement.transaction,
        "payer": paid.settlement.payer,
        "network": paid.settlement.network,
        "amount": paid.offer.amount if paid.offer else None,
        "asset": paid.offer.asset if paid.offer else None,
    }
