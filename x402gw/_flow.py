"""Pure pieces of the payment middleware: reading payments, building 402s, headers, identifiers.

No I/O: given request facts, these return values or :class:`Problem`; the middleware sends them.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from x402gw import exact_evm
from x402gw.config import ErrorRenderer, PricedRoute
from x402gw.errors import InvalidPaymentHeader
from x402gw.exact_evm import NO_MATCHING_REQUIREMENTS, Candidate, find_matching_offer
from x402gw.ledger import PaymentRecord, State
from x402gw.ledger.rules import CLAIMED_STATUS
from x402gw.networks import NetworkRegistry
from x402gw.wire import (
    PAYMENT_HEADERS,
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
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
# Headers the gate sets itself on refusals; a renderer's own values for them are dropped.
_GATE_HEADERS: Final = frozenset(
    {
        b"content-type",
        b"content-length",
        b"cache-control",
        b"access-control-expose-headers",
        PAYMENT_REQUIRED.lower().encode(),
    }
)


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


def route_path(scope: Mapping[str, Any]) -> str:
    """The path an ASGI router dispatches on: ``path`` without the ``root_path`` prefix.

    Starlette's ``get_route_path`` semantics: behind ``uvicorn --root-path /svc`` or inside
    ``Mount("/svc", ...)`` the path still starts with the root path, and routes match the rest.
    """
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def client_key(scope: Mapping[str, Any]) -> str:
    """``ip:<address>`` of the connection's peer (what a proxy-aware server put in the scope)."""
    client = scope.get("client")
    host = client[0] if isinstance(client, list | tuple) and client else "unknown"
    return f"ip:{host}"


def read_payment(
    headers: Iterable[tuple[bytes, bytes]], max_bytes: int
) -> AnyPaymentPayload | Problem | None:
    """The payment sent (``PAYMENT-SIGNATURE`` first, then ``X-PAYMENT``), a Problem, or None."""
    items = list(headers)
    for name in PAYMENT_HEADERS:
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


def offline_check(
    payload: AnyPaymentPayload,
    requirements: PaymentRequirements | PaymentRequirementsV1,
    *,
    now: int,
    networks: NetworkRegistry,
) -> Candidate | Problem:
    """Every check that needs no chain: the exact-EVM rules, and a plain ECDSA signature's signer.

    Runs before the body is read and before any RPC, so a forged payment costs neither.
    Contract-wallet signatures (not 65 bytes, or ERC-6492) are left to the facilitator.
    """
    checked = exact_evm.check_offchain(payload, requirements, now=now, networks=networks)
    if isinstance(checked, exact_evm.Invalid):
        return Problem(402, checked.reason, checked.message or "", True)
    invalid = exact_evm.check_plain_signature(checked)
    if invalid is not None:
        return Problem(402, invalid.reason, invalid.message or "", True)
    return checked


def window_problem(candidate: Candidate, *, now: int, valid_for: float) -> Problem | None:
    """A payment for new work must stay valid ``valid_for`` seconds: the handler's deadline
    plus the settlement, so no work is done for an authorization that expires before it settles."""
    if candidate.authorization.valid_before >= now + valid_for:
        return None
    return Problem(
        402,
        exact_evm.VALID_BEFORE,
        f"validBefore must be at least {math.ceil(valid_for)} s ahead for this route",
        True,
    )


def declared_length_problem(headers: Iterable[tuple[bytes, bytes]], cap: int) -> Problem | None:
    """A 413 for a ``Content-Length`` above ``cap`` (400 for a malformed one), before reading."""
    raw = header(headers, b"content-length")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 19:
        return Problem(400, "invalid_content_length", "Content-Length is not a byte count")
    if int(text) > cap:
        return Problem(413, "request_body_too_large", f"the body exceeds {cap} bytes")
    return None


def signer_proven(candidate: Candidate) -> bool:
    """Was the payer proven offline? True for a plain 65-byte ECDSA signature, which
    :func:`offline_check` recovered to ``from``; contract-wallet signatures need the chain."""
    return candidate.erc6492 is None and len(candidate.signature) == 65


class Replay(enum.Enum):
    """What a request repeating a payment (same identifier, or same authorization) gets."""

    CONFLICT = "conflict"  # another request, or another payer: 409, nothing replayed
    IN_USE = "in_use"  # the first request is still running: 409
    PENDING = "pending"  # settlement broadcast, outcome unknown yet: 402 settlement_pending
    STORED = "stored"  # settled, or a stored refusal: send the stored response
    RUN = "run"  # settled before its handler ran (upfront, settlement was pending): run it now
    FAILED = "failed"  # settlement failed: 402 with the recorded reason, content withheld


def replay_decision(
    record: PaymentRecord,
    fingerprint: str,
    payer: str,
    *,
    upfront: bool = False,
    claim_stale: bool = False,
) -> Replay:
    """Total rule for a repeated payment: stored content is released only for a settled record,
    to the payer who signed it, for the same request. ``claim_stale``: the run that claimed an
    upfront record is older than any run can be (its process died), so another may run it."""
    if record.fingerprint != fingerprint or record.payer.lower() != payer.lower():
        return Replay.CONFLICT
    state, stored = record.state, record.response
    if state is State.SETTLED:
        if stored is None:
            return Replay.RUN if upfront else Replay.IN_USE
        if stored.status == CLAIMED_STATUS:
            return Replay.RUN if upfront and claim_stale else Replay.IN_USE
        return Replay.STORED
    if state is State.SETTLING:
        return Replay.PENDING
    if state is State.FAILED:
        if stored is not None and stored.status >= 400:
            return Replay.STORED
        return Replay.FAILED
    return Replay.IN_USE  # verified (handler running) or released (raced a new reservation)


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
    *,
    scope: Mapping[str, Any] | None = None,
    render: ErrorRenderer | None = None,
) -> tuple[int, Headers, bytes]:
    """402 with both forms: ``PAYMENT-REQUIRED`` (v2, base64) and a v1 JSON body; never cached.

    ``render`` (with the request's ``scope``) may add its own fields beside the v1 body's.
    """
    error = f"{problem.code}: {problem.message}" if problem.message else problem.code
    required = payment_required(offers, error, declare_pid)
    body_model = PaymentRequiredV1(error=error, accepts=[offers.v1] if offers.v1 else [])
    v1_body = body_model.to_json_dict()
    extra: Headers = []
    if render is not None:
        extra, body = render(scope or {}, problem.status, problem.code, problem.message, v1_body)
    else:
        body = json.dumps(v1_body, separators=(",", ":")).encode()
    headers: Headers = [
        *(kv for kv in extra if kv[0].lower() not in _GATE_HEADERS),
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


def error_response(
    problem: Problem,
    *,
    scope: Mapping[str, Any] | None = None,
    render: ErrorRenderer | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[int, Headers, bytes]:
    """A JSON error without offers (404, 405, 409, 400, 413, 429, 500, 502, 503, 504).

    Rendered by ``render`` when given (e.g. an application's error envelope), else
    ``{"error": code, "message": message}``; ``headers`` (e.g. ``Allow``) are added.
    """
    if render is not None:
        extra, body = render(scope or {}, problem.status, problem.code, problem.message, None)
    else:
        extra = []
        body = json.dumps({"error": problem.code, "message": problem.message}).encode()
    out: Headers = [kv for kv in extra if kv[0].lower() not in _GATE_HEADERS]
    out += base_headers(no_store=True)
    out += list(headers)
    return problem.status, out, body


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
