"""x402 v1/v2 wire models and header codecs (base64 JSON), tolerant on input, canonical on output."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from x402gw.errors import InvalidPaymentHeader, InvalidPaymentPayload

PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
X_PAYMENT: Final = "X-PAYMENT"
PAYMENT_HEADERS: Final = (PAYMENT_SIGNATURE, X_PAYMENT)
"""Request headers carrying a payment, in the order they are read: the v2 name wins."""
PAYMENT_REQUIRED: Final = "PAYMENT-REQUIRED"
PAYMENT_RESPONSE: Final = "PAYMENT-RESPONSE"
X_PAYMENT_RESPONSE: Final = "X-PAYMENT-RESPONSE"
MAX_HEADER_BYTES: Final = 16 * 1024
_URLSAFE_TO_STD: Final = bytes.maketrans(b"-_", b"+/")


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept, not rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="allow",
    )

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict with wire names, omitting unset optional (None) fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _parse_extra_string(value: object) -> object:
    # v1 servers sometimes send `extra` as a JSON-encoded string; the SDK decodes it.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ResourceInfo(WireModel):
    """The paid resource (v2 top level)."""

    url: str
    description: str | None = None
    mime_type: str | None = None
    service_name: str | None = None
    tags: list[str] | None = None
    icon_url: str | None = None


class PaymentRequirements(WireModel):
    """One v2 offer: pay ``amount`` atomic units of ``asset`` on ``network`` to ``pay_to``."""

    scheme: str
    network: str
    asset: str
    amount: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any] = Field(default_factory=dict)


class PaymentRequired(WireModel):
    """v2 402 challenge, carried base64-encoded in the ``PAYMENT-REQUIRED`` header."""

    x402_version: Literal[2] = 2
    error: str | None = None
    resource: ResourceInfo | None = None
    accepts: list[PaymentRequirements]
    extensions: dict[str, Any] | None = None


class PaymentPayload(WireModel):
    """v2 payment: the scheme payload plus the offer it accepts, echoed verbatim."""

    x402_version: Literal[2] = 2
    payload: dict[str, Any]
    accepted: PaymentRequirements
    resource: ResourceInfo | None = None
    extensions: dict[str, Any] | None = None


class PaymentRequirementsV1(WireModel):
    """One v1 offer (legacy network names, ``maxAmountRequired``, resource info inline)."""

    scheme: str
    network: str
    max_amount_required: str
    resource: str
    description: str | None = None
    mime_type: str | None = None
    pay_to: str
    max_timeout_seconds: int
    asset: str
    output_schema: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    _decode_extra = field_validator("extra", mode="before")(_parse_extra_string)


class PaymentRequiredV1(WireModel):
    """v1 402 challenge, sent as the JSON response body."""

    x402_version: Literal[1] = 1
    error: str | None = None
    accepts: list[PaymentRequirementsV1]


class PaymentPayloadV1(WireModel):
    """v1 payment (``X-PAYMENT``): scheme and network at top level, no ``accepted``."""

    x402_version: Literal[1] = 1
    scheme: str
    network: str
    payload: dict[str, Any]


class ExactEvmAuthorization(WireModel):
    """EIP-3009 TransferWithAuthorization fields as sent: uints as decimal strings, nonce as 0x hex."""

    from_: str = Field(alias="from")
    to: str
    value: str
    valid_after: str
    valid_before: str
    nonce: str

    @field_validator("value", "valid_after", "valid_before", mode="before")
    @classmethod
    def _int_to_str(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ExactEvmPayload(WireModel):
    """The exact-EVM (EIP-3009) scheme payload: an authorization and its signature."""

    signature: str = ""  # the SDK treats a missing signature as an invalid one, not a parse error
    authorization: ExactEvmAuthorization

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> ExactEvmPayload:
        """Parse a ``PaymentPayload.payload`` dict; raises :class:`InvalidPaymentPayload`."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPaymentPayload(
                f"not an exact-EVM payload: {exc.error_count()} errors"
            ) from exc


class VerifyResponse(WireModel):
    """Facilitator ``/verify`` answer; reasons are open strings."""

    is_valid: bool
    invalid_reason: str | None = None
    invalid_message: str | None = None
    payer: str | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class SettleResponse(WireModel):
    """Facilitator ``/settle`` answer, also the ``PAYMENT-RESPONSE`` receipt; ``transaction`` is "" on failure."""

    success: bool
    error_reason: str | None = None
    error_message: str | None = None
    payer: str | None = None
    transaction: str = ""
    network: str
    amount: str | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class SupportedKind(WireModel):
    """One (version, scheme, network) a facilitator handles."""

    x402_version: int
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(WireModel):
    """Facilitator ``/supported`` answer."""

    kinds: list[SupportedKind]
    extensions: list[str] = Field(default_factory=list)
    signers: dict[str, list[str]] = Field(default_factory=dict)


class FacilitatorRequest(WireModel):
    """Body of ``/verify`` and ``/settle``: payload and requirements of the same version."""

    x402_version: int
    payment_payload: PaymentPayload | PaymentPayloadV1
    payment_requirements: PaymentRequirements | PaymentRequirementsV1

    @field_validator("payment_payload", mode="before")
    @classmethod
    def _payload_by_version(cls, value: object) -> object:
        return _payload_model(value).model_validate(value) if isinstance(value, dict) else value


_M = TypeVar("_M", bound=WireModel)
AnyPaymentPayload = PaymentPayload | PaymentPayloadV1
AnyPaymentRequired = PaymentRequired | PaymentRequiredV1


# --------------------------------------------------------------------------------------------
# base64 JSON codecs


def b64encode_json(data: WireModel | Mapping[str, Any]) -> str:
    """Standard padded base64 of compact UTF-8 JSON (models use wire names, None omitted)."""
    obj = data.to_json_dict() if isinstance(data, WireModel) else dict(data)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def b64decode_json(value: str | bytes, *, max_bytes: int = MAX_HEADER_BYTES) -> Any:
    """Decode base64 (standard or URL-safe, padded or not) JSON; raises :class:`InvalidPaymentHeader`."""
    if isinstance(value, str):
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError as exc:
            raise InvalidPaymentHeader("header is not ASCII") from exc
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise InvalidPaymentHeader(f"header must be str or bytes, got {type(value).__name__}")
    if len(raw) > max_bytes:
        raise InvalidPaymentHeader(f"header is {len(raw)} bytes, limit {max_bytes}")
    raw = raw.strip().translate(_URLSAFE_TO_STD).rstrip(b"=")
    if not raw:
        raise InvalidPaymentHeader("header is empty")
    try:
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        return pydantic_core.from_json(decoded)  # depth-limited, whatever the recursion limit
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidPaymentHeader(f"header is not base64 JSON: {type(exc).__name__}") from exc


def _validate(model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidPaymentHeader(
            f"not a valid {model.__name__}: {exc.error_count()} errors"
        ) from exc


def _payload_model(data: object) -> type[PaymentPayload] | type[PaymentPayloadV1]:
    version = data.get("x402Version", 2) if isinstance(data, dict) else 2
    if version == 1 and not isinstance(version, bool):
        return PaymentPayloadV1
    if version == 2 and not isinstance(version, bool):
        return PaymentPayload
    raise InvalidPaymentHeader(f"unsupported x402Version {version!r}")


def decode_payment_payload(value: str | bytes) -> AnyPaymentPayload:
    """Decode a ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` value; a missing x402Version means 2 (as the SDK)."""
    data = b64decode_json(value)
    if not isinstance(data, dict):
        raise InvalidPaymentHeader("payment payload is not a JSON object")
    return _validate(_payload_model(data), data)


def encode_payment_payload(payload: AnyPaymentPayload) -> str:
    """Header value for a payment payload (either version)."""
    return b64encode_json(payload)


def read_payment_header(headers: Mapping[str, str]) -> AnyPaymentPayload | None:
    """The payment in a request's headers: ``PAYMENT-SIGNATURE`` first, then ``X-PAYMENT``; None if absent."""
    for name in PAYMENT_HEADERS:
        value = _header(headers, name)
        if value is not None:
            return decode_payment_payload(value)
    return None


def encode_payment_required(required: PaymentRequired) -> str:
    """``PAYMENT-REQUIRED`` header value for a v2 challenge."""
    return b64encode_json(required)


def decode_payment_required(value: str | bytes) -> PaymentRequired:
    """Parse a ``PAYMENT-REQUIRED`` header value."""
    return _validate(PaymentRequired, b64decode_json(value))


def payment_required_v1_body(required: PaymentRequiredV1) -> bytes:
    """The v1 402 JSON body."""
    return json.dumps(required.to_json_dict(), separators=(",", ":")).encode("utf-8")


def parse_payment_required_v1_body(body: bytes | str) -> PaymentRequiredV1:
    """Parse a v1 402 JSON body; raises :class:`InvalidPaymentHeader`."""
    if len(body) > 1024 * 1024:
        raise InvalidPaymentHeader("402 body too large")
    try:
        data = pydantic_core.from_json(body)  # depth-limited, whatever the recursion limit
    except ValueError as exc:
        raise InvalidPaymentHeader("402 body is not JSON") from exc
    return _validate(PaymentRequiredV1, data)


def settlement_header_name(x402_version: int) -> str:
    """``PAYMENT-RESPONSE`` for v2, ``X-PAYMENT-RESPONSE`` for v1."""
    if x402_version == 1:
        return X_PAYMENT_RESPONSE
    if x402_version == 2:
        return PAYMENT_RESPONSE
    raise InvalidPaymentHeader(f"unsupported x402Version {x402_version!r}")


def encode_settle_response(response: SettleResponse) -> str:
    """``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` header value."""
    return b64encode_json(response)


def decode_settle_response(value: str | bytes) -> SettleResponse:
    """Parse a ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` header value."""
    return _validate(SettleResponse, b64decode_json(value))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None
