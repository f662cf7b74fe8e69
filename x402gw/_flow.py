"""Pure pieces of the payment middleware: reading payments, building 402s, headers, identifiers.

No I/O: given request facts, these return values or :class:`Problem`; the middleware sends them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from x402gw.config import PricedRoute
from x402gw.errors import InvalidPaymentHeader
from x402gw.exact_evm import NO_MATCHING_REQUIREMENTS, find_matching_offer
from x402gw.wire import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    AnyPaymentPayload,
    PaymentPayload,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    decode_payment_payload,
    encode_payment_required,
    encode_settle_response,
    settlement_header_name,
)

Headers = list[tuple[bytes, bytes]]

PAYMENT_IDENTIFIER: Final = "payment-identifier"
EXPOSED: Final = f"{PAYMENT_REQUIRED}, {PAYMENT_RESPONSE}, {X_PAYMENT_RESPONSE}"
PAYMENT_REQUIRED_ERROR: Final = "Payment required"
_PID = re.compile(r"[A-Za-z0-9_-]{16,128}")
_PID_SCHEMA: Final = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "required": {"type": "boolean"},
        "id": {"type": "string", "minLength": 16, "maxLength": 128, "pattern": "^[a-zA-Z0-9_-]+$"},
    },
    "required": ["required"],
}
_HOP_BY_HOP: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal: HTTP status, machine code, human message; ``challenge`` adds the 402 offers."""

    status: int
    code: str
    message: str = ""
    challenge: bool = False


@dataclass(frozen=True, slots=True)
class Offers:
    """What one priced route offers in both versions."""

    v2: PaymentRequirements
    v1: PaymentRequirementsV1 | None
    resource: ResourceInfo


def offers_for(route: PricedRoute, url: str) -> Offers:
    """The v2 and v1 offers (and resource info) of ``route`` reached at ``url``."""
    return Offers(
        v2=route.requirements(),
        v1=route.requirements_v1(url),
        resource=ResourceInfo(
            url=url, description=route.description or None, mime_type=route.mime_type
        ),
    )


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """First value of a header (names compared case-insensitively; ASGI names are lower-case)."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def read_payment(
    headers: Iterable[tuple[bytes, bytes]], max_bytes: int
) -> AnyPaymentPayload | Problem | None:
    """The payment sent (``PAYMENT-SIGNATURE`` first, then ``X-PAYMENT``), a Problem, or None."""
    items = list(headers)
    for name in (PAYMENT_SIGNATURE, X_PAYMENT):
        raw = header(items, name.lower().encode())
        if raw is None:
            continue
        if len(raw) > max_bytes:
            return Problem(402, "invalid_payment_header", f"{name} exceeds {max_bytes} bytes", True)
        try:
            return decode_payment_payload(raw)
        except InvalidPaymentHeader as exc:
            return Problem(402, "invalid_payment_header", f"{name}: {exc}", True)
    return None


def match_offer(
    payload: AnyPaymentPayload, offers: Offers
) -> PaymentRequirements | PaymentRequirementsV1 | Problem:
    """The offer this payment answers (same version), or a 402 "No matching payment requirements"."""
    candidates: Sequence[PaymentRequirements] | Sequence[PaymentRequirementsV1]
    if isinstance(payload, PaymentPayload):
        candidates = [offers.v2]
    else:
        candidates = [offers.v1] if offers.v1 is not None else []
    found = find_matching_offer(payload, candidates)
    if found is None:
        return Problem(402, NO_MATCHING_REQUIREMENTS, "", True)
    return found


def payment_identifier(payload: AnyPaymentPayload) -> str | Problem | None:
    """The payment-identifier extension id (idempotency key); None if absent, Problem if malformed."""
    extensions = payload.extensions if isinstance(payload, PaymentPayload) else None
    if not extensions or PAYMENT_IDENTIFIER not in extensions:
        return None
    ext = extensions[PAYMENT_IDENTIFIER]
    info = ext.get("info") if isinstance(ext, Mapping) else None
    pid = info.get("id") if isinstance(info, Mapping) else None
    if pid is None:
        return None
    if not isinstance(pid, str) or not _PID.fullmatch(pid):
        return Problem(400, "invalid_payment_identifier", "id must be 16-128 of [A-Za-z0-9_-]")
    return pid


def payment_required(offers: Offers, error: str, declare_pid: bool) -> PaymentRequired:
    """The v2 challenge."""
    extensions = (
        {PAYMENT_IDENTIFIER: {"info": {"required": False}, "schema": _PID_SCHEMA}}
        if declare_pid
        else None
    )
    return PaymentRequired(
        error=error, resource=offers.resource, accepts=[offers.v2], extensions=extensions
    )


def challenge_response(
    offers: Offers,
    problem: Problem,
    declare_pid: bool,
    settle: SettleResponse | None = None,
    version: int = 2,
) -> tuple[int, Headers, bytes]:
    """402 with both forms: ``PAYMENT-REQUIRED`` (v2, base64) and a v1 JSON body; never cached."""
    error = f"{problem.code}: {problem.message}" if problem.message else problem.code
    required = payment_required(offers, error, declare_pid)
    body_model = PaymentRequiredV1(error=error, accepts=[offers.v1] if offers.v1 else [])
    body = json.dumps(body_model.to_json_dict(), separators=(",", ":")).encode()
    headers: Headers = [
        (PAYMENT_REQUIRED.lower().encode(), encode_payment_required(required).encode()),
        *base_headers(no_store=True),
    ]
    if settle is not None:
        headers.append(
            (
                settlement_header_name(version).lower().encode(),
                encode_settle_response(settle).encode(),
            )
        )
    return problem.status, headers, body


def error_response(problem: Problem) -> tuple[int, Headers, bytes]:
    """A JSON error without offers (409, 400, 413, 500, 502, 503)."""
    body = json.dumps({"error": problem.code, "message": problem.message}).encode()
    return problem.status, base_headers(no_store=True), body


def base_headers(*, no_store: bool) -> Headers:
    """JSON content type, CORS exposure of the payment headers, and no-store for refusals."""
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"access-control-expose-headers", EXPOSED.encode()),
    ]
    if no_store:
        headers.append((b"cache-control", b"no-store"))
    return headers


def paid_headers(
    handler_headers: Sequence[tuple[bytes, bytes]], settle: SettleResponse, version: int
) -> Headers:
    """The handler's headers plus the receipt, ``Cache-Control: private`` and CORS exposure."""
    out: Headers = []
    cache: bytes | None = None
    expose: bytes | None = None
    for key, value in handler_headers:
        low = key.lower()
        if low == b"cache-control":
            cache = value
        elif low == b"access-control-expose-headers":
            expose = value
        elif low not in (PAYMENT_RESPONSE.lower().encode(), X_PAYMENT_RESPONSE.lower().encode()):
            out.append((key, value))
    if cache is None or not cache.strip():
        cache = b"private"
    elif b"private" not in cache.lower() and b"no-store" not in cache.lower():
        cache = cache.replace(b"public", b"").strip(b" ,") + b", private"
        cache = cache.lstrip(b" ,")
    out.append((b"cache-control", cache))
    exposed = EXPOSED.encode() if expose is None else expose + b", " + EXPOSED.encode()
    out.append((b"access-control-expose-headers", exposed))
    out.append(
        (settlement_header_name(version).lower().encode(), encode_settle_response(settle).encode())
    )
    return out


def with_length(headers: Sequence[tuple[bytes, bytes]], length: int) -> Headers:
    """Headers for a buffered body: hop-by-hop framing removed, exact Content-Length set."""
    out = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    out.append((b"content-length", str(length).encode()))
    return out


def resource_url(scope: Mapping[str, Any]) -> str:
    """The absolute URL of the request (scheme, Host header or server address, path, query)."""
    hdrs = scope.get("headers") or []
    host_raw = header(hdrs, b"host")
    if host_raw is not None:
        host = host_raw.decode("latin-1")
    else:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    query = scope.get("query_string") or b""
    tail = "?" + query.decode("latin-1") if query else ""
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '/')}{tail}"


def settle_problem(settle: SettleResponse) -> Problem:
    """The 402 a failed settlement becomes."""
    return Problem(
        402, settle.error_reason or "settlement_failed", settle.error_message or "", True
    )


def ledger_resource(method: str, target: str) -> str:
    """``METHOD /path?query`` as the ledger stores it: printable and at most 2000 characters."""
    text = f"{method} {target}"
    return "".join(c if c.isprintable() else "?" for c in text)[:2000]
