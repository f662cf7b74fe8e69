"""Wire models and header codecs: round trips, SDK interop, base64 variants, garbage in."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.http import utils as sdk_http
from x402.schemas import PaymentPayload as SdkPayload
from x402.schemas import PaymentRequired as SdkRequired
from x402.schemas import SettleResponse as SdkSettle
from x402.schemas.v1 import PaymentPayloadV1 as SdkPayloadV1

from x402gw import wire
from x402gw.errors import InvalidPaymentHeader, InvalidPaymentPayload

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

REQ = wire.PaymentRequirements(
    scheme="exact",
    network="eip155:8453",
    asset=TOKEN,
    amount="10000",
    pay_to=PAY_TO,
    max_timeout_seconds=120,
    extra={"name": "USD Coin", "version": "2"},
)
EVM_PAYLOAD = {
    "signature": "0x" + "ab" * 65,
    "authorization": {
        "from": PAYER,
        "to": PAY_TO,
        "value": "10000",
        "validAfter": "0",
        "validBefore": "1795906677",
        "nonce": "0x" + "11" * 32,
    },
}


def _b64(obj: object, *, urlsafe: bool = False, pad: bool = True) -> str:
    raw = json.dumps(obj).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if pad else text.rstrip("=")


def test_v2_payload_round_trip_uses_camel_case_wire_names() -> None:
    payload = wire.PaymentPayload(
        payload=EVM_PAYLOAD, accepted=REQ, resource=wire.ResourceInfo(url="http://x/paid")
    )
    header = wire.encode_payment_payload(payload)
    raw = json.loads(base64.b64decode(header, validate=True))
    assert raw["x402Version"] == 2
    assert raw["accepted"]["payTo"] == PAY_TO
    assert raw["accepted"]["maxTimeoutSeconds"] == 120
    assert "mimeType" not in raw["resource"]  # None fields are omitted
    assert wire.decode_payment_payload(header) == payload


def test_sdk_encoded_headers_decode_to_equal_models() -> None:
    sdk_payload = SdkPayload.model_validate(
        {"x402Version": 2, "payload": EVM_PAYLOAD, "accepted": REQ.to_json_dict()}
    )
    ours = wire.decode_payment_payload(sdk_http.encode_payment_signature_header(sdk_payload))
    assert isinstance(ours, wire.PaymentPayload)
    assert ours.accepted == REQ
    assert ours.payload == EVM_PAYLOAD

    sdk_v1 = SdkPayloadV1(scheme="exact", network="base", payload=EVM_PAYLOAD)
    ours_v1 = wire.decode_payment_payload(sdk_http.encode_payment_signature_header(sdk_v1))
    assert isinstance(ours_v1, wire.PaymentPayloadV1)
    assert (ours_v1.scheme, ours_v1.network) == ("exact", "base")


def test_sdk_decodes_what_we_encode() -> None:
    required = wire.PaymentRequired(
        error="Payment required", resource=wire.ResourceInfo(url="http://x/paid"), accepts=[REQ]
    )
    sdk_required = sdk_http.decode_payment_required_header(wire.encode_payment_required(required))
    assert isinstance(sdk_required, SdkRequired)
    assert sdk_required.accepts[0].pay_to == PAY_TO
    assert sdk_required.accepts[0].extra == {"name": "USD Coin", "version": "2"}

    settle = wire.SettleResponse(
        success=True, payer=PAYER, transaction="0xabc", network="eip155:8453"
    )
    sdk_settle = sdk_http.decode_payment_response_header(wire.encode_settle_response(settle))
    assert isinstance(sdk_settle, SdkSettle)
    assert (sdk_settle.success, sdk_settle.transaction, sdk_settle.payer) == (True, "0xabc", PAYER)


def test_settle_response_from_sdk_round_trips() -> None:
    sdk = SdkSettle(
        success=False, error_reason="transaction_failed", transaction="", network="base"
    )
    ours = wire.decode_settle_response(sdk_http.encode_payment_response_header(sdk))
    assert (ours.success, ours.error_reason, ours.network) == (False, "transaction_failed", "base")
    assert wire.decode_settle_response(wire.encode_settle_response(ours)) == ours


@pytest.mark.parametrize(
    ("urlsafe", "pad"), [(False, True), (False, False), (True, True), (True, False)]
)
def test_base64_alphabets_and_padding_are_accepted(urlsafe: bool, pad: bool) -> None:
    # '?>' style characters force '+' and '/' (or '-' and '_') into the encoding.
    obj = {"x402Version": 1, "scheme": "exact", "network": "base", "payload": {"k": "??>>~~\u00ff"}}
    encoded = _b64(obj, urlsafe=urlsafe, pad=pad)
    special = set("-_") if urlsafe else set("+/")
    assert special & set(encoded), "the sample must exercise the alphabet-specific characters"
    decoded = wire.decode_payment_payload(encoded)
    assert isinstance(decoded, wire.PaymentPayloadV1)
    assert decoded.payload == {"k": "??>>~~\u00ff"}


def test_encoding_is_standard_padded_base64() -> None:
    header = wire.b64encode_json({"k": "??>>~~"})
    assert header.endswith("=") or len(header) % 4 == 0
    assert "-" not in header
    assert "_" not in header
    assert base64.b64decode(header, validate=True) == b'{"k":"??>>~~"}'


def test_unknown_fields_are_kept_and_reasons_are_open_strings() -> None:
    verify = wire.VerifyResponse.model_validate(
        {"isValid": False, "invalidReason": "failed_to_execute_transfer", "futureField": [1, 2]}
    )
    assert verify.invalid_reason == "failed_to_execute_transfer"
    assert verify.to_json_dict()["futureField"] == [1, 2]


def test_missing_version_defaults_to_v2() -> None:
    data = {"payload": EVM_PAYLOAD, "accepted": REQ.to_json_dict()}
    assert isinstance(wire.decode_payment_payload(_b64(data)), wire.PaymentPayload)


def test_v1_requirements_accept_extra_as_json_string() -> None:
    req = wire.PaymentRequirementsV1.model_validate(
        {
            "scheme": "exact",
            "network": "base",
            "maxAmountRequired": "10000",
            "resource": "http://x/paid",
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": TOKEN,
            "extra": '{"name": "USD Coin", "version": "2"}',
        }
    )
    assert req.extra == {"name": "USD Coin", "version": "2"}


def test_v1_required_body_round_trip() -> None:
    req_v1 = wire.PaymentRequirementsV1(
        scheme="exact",
        network="base",
        max_amount_required="10000",
        resource="http://x/paid",
        pay_to=PAY_TO,
        max_timeout_seconds=60,
        asset=TOKEN,
        extra={"name": "USD Coin", "version": "2"},
    )
    body = wire.payment_required_v1_body(
        wire.PaymentRequiredV1(error="Payment required", accepts=[req_v1])
    )
    assert json.loads(body)["accepts"][0]["maxAmountRequired"] == "10000"
    parsed = wire.parse_payment_required_v1_body(body)
    assert parsed.accepts == [req_v1]
    with pytest.raises(InvalidPaymentHeader):
        wire.parse_payment_required_v1_body(b"{not json")
    with pytest.raises(InvalidPaymentHeader):
        wire.parse_payment_required_v1_body(b'{"x402Version": 2, "accepts": []}')


def test_read_payment_header_prefers_v2_and_is_case_insensitive() -> None:
    v2 = wire.encode_payment_payload(wire.PaymentPayload(payload=EVM_PAYLOAD, accepted=REQ))
    v1 = wire.encode_payment_payload(
        wire.PaymentPayloadV1(scheme="exact", network="base", payload=EVM_PAYLOAD)
    )
    both = wire.read_payment_header({"x-payment": v1, "payment-signature": v2})
    assert isinstance(both, wire.PaymentPayload)
    only_v1 = wire.read_payment_header({"X-Payment": v1})
    assert isinstance(only_v1, wire.PaymentPayloadV1)
    assert wire.read_payment_header({"accept": "*/*"}) is None


def test_settlement_header_name_by_version() -> None:
    assert wire.settlement_header_name(2) == "PAYMENT-RESPONSE"
    assert wire.settlement_header_name(1) == "X-PAYMENT-RESPONSE"
    with pytest.raises(InvalidPaymentHeader):
        wire.settlement_header_name(3)


def test_facilitator_request_dispatches_on_payload_version() -> None:
    body = {
        "x402Version": 1,
        "paymentPayload": {
            "x402Version": 1,
            "scheme": "exact",
            "network": "base",
            "payload": EVM_PAYLOAD,
        },
        "paymentRequirements": REQ.to_json_dict(),
    }
    request = wire.FacilitatorRequest.model_validate(body)
    assert isinstance(request.payment_payload, wire.PaymentPayloadV1)


def test_exact_evm_payload_parse() -> None:
    parsed = wire.ExactEvmPayload.parse(EVM_PAYLOAD)
    assert parsed.authorization.from_ == PAYER
    assert parsed.to_json_dict()["authorization"]["from"] == PAYER
    with pytest.raises(InvalidPaymentPayload):
        wire.ExactEvmPayload.parse({"authorization": {"from": PAYER}})


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("   ", "blank"),
        ("!!!!", "not base64"),
        ("YWJj", "base64 of non-JSON 'abc'"),
        (_b64([1, 2]), "JSON but not an object"),
        (_b64({"x402Version": 3, "payload": {}}), "unknown version"),
        (_b64({"x402Version": True, "payload": {}}), "bool version"),
        (_b64({"x402Version": 2, "payload": {}}), "v2 without accepted"),
        (_b64({"x402Version": 1, "payload": {}}), "v1 without scheme"),
        (base64.b64encode(b"\xff\xfe{}").decode(), "not UTF-8"),
        ("ü" * 4, "not ASCII"),
        ("A" * (wire.MAX_HEADER_BYTES + 1), "too large"),
        (base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(), "deeply nested"),
    ],
)
def test_bad_headers_raise_typed_error(value: str, why: str) -> None:
    with pytest.raises(InvalidPaymentHeader):
        wire.decode_payment_payload(value)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_untyped_errors(data: bytes) -> None:
    for candidate in (data, base64.b64encode(data)):
        with contextlib.suppress(InvalidPaymentHeader):
            wire.decode_payment_payload(candidate)


@given(st.text(max_size=512))
def test_arbitrary_text_never_escapes_as_untyped_errors(text: str) -> None:
    for candidate in (text, base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()):
        for decode in (
            wire.decode_payment_payload,
            wire.decode_payment_required,
            wire.decode_settle_response,
        ):
            with contextlib.suppress(InvalidPaymentHeader):
                decode(candidate)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["x402Version", "payload", "accepted", "scheme", "network", "x"]),
        json_values,
    )
)
def test_arbitrary_json_objects_decode_or_raise_typed_error(obj: dict[str, object]) -> None:
    try:
        decoded = wire.decode_payment_payload(_b64(obj))
    except InvalidPaymentHeader:
        return
    assert wire.decode_payment_payload(wire.encode_payment_payload(decoded)) == decoded


def test_deep_json_is_refused_even_at_py_eccs_recursion_limit() -> None:
    """py_ecc (eth_account) raises the recursion limit to 100,000; the C json parser then
    overflowed the C stack on a hostile 402 body or RPC answer. Parsing is depth-limited now."""
    import subprocess
    import sys

    code = (
        "import base64, sys, eth_account\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "from x402gw.errors import InvalidPaymentHeader\n"
        "from x402gw.wire import b64decode_json, parse_payment_required_v1_body\n"
        "for call in (lambda: parse_payment_required_v1_body(b'[' * 1_000_000),\n"
        "             lambda: b64decode_json(base64.b64encode(b'[' * 12_000))):\n"
        "    try:\n"
        "        call()\n"
        "    except InvalidPaymentHeader:\n"
        "        print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-300:]
    assert out.stdout.split() == ["refused", "refused"]
