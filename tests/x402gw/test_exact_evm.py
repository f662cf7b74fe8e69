"""Pure exact-EVM rules against payloads signed by the official SDK client (no chain needed)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization

from x402gw import exact_evm as ev
from x402gw.errors import InvalidPaymentPayload
from x402gw.wire import (
    AnyPaymentPayload,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)

PayFunction = Callable[[LocalAccount, Any], Awaitable[AnyPaymentPayload]]

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
MERCHANT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
FACTORY = "0x00000000000000000000000000000000000Fac70"
PAYER = Account.from_key("0x" + "42" * 32)

OFFER = PaymentRequirements(
    scheme="exact",
    network="eip155:31337",
    asset=TOKEN,
    amount="10000",
    pay_to=MERCHANT,
    max_timeout_seconds=120,
    extra={"name": "USD Coin", "version": "2"},
)
OFFER_V1 = PaymentRequirementsV1(
    scheme="exact",
    network="anvil",
    max_amount_required="10000",
    resource="http://127.0.0.1/paid",
    pay_to=MERCHANT,
    max_timeout_seconds=120,
    asset=TOKEN,
    extra={"name": "USD Coin", "version": "2"},
)


def now() -> int:
    return int(time.time())


def with_auth(payload: AnyPaymentPayload, **changes: Any) -> AnyPaymentPayload:
    """A copy of ``payload`` with authorization (or signature) fields replaced, signature untouched."""
    inner = dict(payload.payload)
    auth = dict(inner["authorization"])
    if "signature" in changes:
        inner["signature"] = changes.pop("signature")
    auth.update(changes)
    inner["authorization"] = auth
    return payload.model_copy(update={"payload": inner})


def candidate(
    payload: AnyPaymentPayload, offer: PaymentRequirements | PaymentRequirementsV1 = OFFER
) -> ev.Candidate:
    checked = ev.check_offchain(payload, offer, now=now())
    assert isinstance(checked, ev.Candidate), checked
    return checked


def self_signed(signer: LocalAccount, domain: ev.Domain, auth: ev.Authorization) -> dict[str, Any]:
    """A wire payload signed by our own helper (for cases the SDK client never produces)."""
    return {
        "signature": "0x" + ev.sign_authorization(domain, auth, signer.key).hex(),
        "authorization": {
            "from": auth.from_address,
            "to": auth.to,
            "value": str(auth.value),
            "validAfter": str(auth.valid_after),
            "validBefore": str(auth.valid_before),
            "nonce": "0x" + auth.nonce.hex(),
        },
    }


DOMAIN = ev.Domain("USD Coin", "2", 31337, TOKEN)


async def test_sdk_v2_payment_passes_offchain_and_signature(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    assert isinstance(payload, PaymentPayload)
    found = candidate(payload)
    assert found.payer == PAYER.address
    assert found.authorization.value == 10000
    assert ev.check_signature(found, b"", None) is None
    assert ev.recover_signer(found.domain, found.authorization, found.signature) == PAYER.address


async def test_sdk_v1_payment_passes_offchain_and_signature(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER_V1)
    assert isinstance(payload, PaymentPayloadV1)
    found = candidate(payload, OFFER_V1)
    assert found.authorization.valid_after < now()  # v1 clients backdate validAfter
    assert ev.check_signature(found, b"", None) is None


async def test_digest_matches_the_sdk_hash(pay: PayFunction) -> None:
    found = candidate(await pay(PAYER, OFFER))
    auth = found.authorization
    sdk_auth = ExactEIP3009Authorization(
        from_address=auth.from_address,
        to=auth.to,
        value=str(auth.value),
        valid_after=str(auth.valid_after),
        valid_before=str(auth.valid_before),
        nonce="0x" + auth.nonce.hex(),
    )
    assert found.digest == hash_eip3009_authorization(sdk_auth, 31337, TOKEN, "USD Coin", "2")


@pytest.mark.parametrize(
    ("offer_changes", "accepted_changes", "reason"),
    [
        ({}, {"scheme": "upto"}, ev.UNSUPPORTED_SCHEME),
        ({"network": "eip155:8453"}, {}, ev.NETWORK_MISMATCH),
        ({"network": "base"}, {"network": "base"}, ev.FAILED_TO_GET_NETWORK_CONFIG),
        ({"network": "eip155:x"}, {"network": "eip155:x"}, ev.FAILED_TO_GET_NETWORK_CONFIG),
        ({"extra": {"name": "USD Coin"}}, {}, ev.MISSING_EIP712_DOMAIN),
        ({"pay_to": "0x000000000000000000000000000000000000dEaD"}, {}, ev.RECIPIENT_MISMATCH),
        ({"amount": "10001"}, {}, ev.VALUE_MISMATCH),
        ({"amount": "9999"}, {}, ev.VALUE_MISMATCH),  # more than asked is refused too (SDK rule)
        ({"amount": "ten"}, {}, ev.INVALID_PAYLOAD),
        ({"asset": "0x1234"}, {}, ev.FAILED_TO_VERIFY_SIGNATURE),
    ],
)
async def test_offchain_rules_report_sdk_reasons(
    pay: PayFunction, offer_changes: dict[str, Any], accepted_changes: dict[str, Any], reason: str
) -> None:
    payload = await pay(PAYER, OFFER)
    assert isinstance(payload, PaymentPayload)
    tampered = payload.model_copy(
        update={"accepted": payload.accepted.model_copy(update=accepted_changes)}
    )
    result = ev.check_offchain(tampered, OFFER.model_copy(update=offer_changes), now=now())
    assert result == ev.Invalid(
        reason, PAYER.address, result.message if isinstance(result, ev.Invalid) else None
    )


async def test_payto_comparison_ignores_case(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    assert isinstance(
        candidate(payload, OFFER.model_copy(update={"pay_to": MERCHANT.lower()})), ev.Candidate
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"value": "abc"}, ev.INVALID_PAYLOAD),
        ({"nonce": "0x1234"}, ev.INVALID_PAYLOAD),
        ({"from": "not-an-address"}, ev.INVALID_PAYLOAD),
        ({"validBefore": str(2**256)}, ev.INVALID_PAYLOAD),
        ({"to": "0x000000000000000000000000000000000000dEaD"}, ev.RECIPIENT_MISMATCH),
        ({"value": "20000"}, ev.VALUE_MISMATCH),
        ({"signature": ""}, ev.INVALID_SIGNATURE),
        ({"signature": "0xzz"}, ev.FAILED_TO_VERIFY_SIGNATURE),
        ({"signature": "0xabc"}, ev.FAILED_TO_VERIFY_SIGNATURE),
    ],
)
async def test_tampered_authorization_fields(
    pay: PayFunction, changes: dict[str, Any], reason: str
) -> None:
    result = ev.check_offchain(with_auth(await pay(PAYER, OFFER), **changes), OFFER, now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == reason
    assert result.payer == changes.get(
        "from", PAYER.address
    )  # the claimed payer, even if malformed


async def test_time_window_boundaries(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    before = int(payload.payload["authorization"]["validBefore"])
    assert isinstance(ev.check_offchain(payload, OFFER, now=before - 6), ev.Candidate)
    late = ev.check_offchain(payload, OFFER, now=before - 5)
    assert isinstance(late, ev.Invalid)
    assert late.reason == ev.VALID_BEFORE
    early = ev.check_offchain(with_auth(payload, validAfter=str(now() + 60)), OFFER, now=now())
    assert isinstance(early, ev.Invalid)
    assert early.reason == ev.VALID_AFTER


async def test_rules_run_in_sdk_order(pay: PayFunction) -> None:
    # Wrong recipient, wrong value and an expired window at once: the recipient is reported first.
    payload = with_auth(await pay(PAYER, OFFER), to=FACTORY, value="1", validBefore="1")
    result = ev.check_offchain(payload, OFFER, now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.RECIPIENT_MISMATCH


async def test_version_mismatch_between_payload_and_requirements(pay: PayFunction) -> None:
    result = ev.check_offchain(await pay(PAYER, OFFER), OFFER_V1, now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.INVALID_X402_VERSION


async def test_v1_requires_both_schemes_exact(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER_V1)
    result = ev.check_offchain(payload, OFFER_V1.model_copy(update={"scheme": "upto"}), now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.UNSUPPORTED_SCHEME
    result = ev.check_offchain(payload, OFFER_V1.model_copy(update={"extra": None}), now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.MISSING_EIP712_DOMAIN


async def test_signature_over_other_values_is_refused(pay: PayFunction) -> None:
    # Same value on both sides (so rule 6 passes) but not the value that was signed.
    payload = with_auth(await pay(PAYER, OFFER), value="20000")
    found = candidate(payload, OFFER.model_copy(update={"amount": "20000"}))
    assert ev.check_signature(found, b"", None) == ev.Invalid(ev.INVALID_SIGNATURE, PAYER.address)


async def test_wrong_domain_name_is_an_invalid_signature(pay: PayFunction) -> None:
    signed_as_usdc = await pay(
        PAYER, OFFER.model_copy(update={"extra": {"name": "USDC", "version": "2"}})
    )
    assert isinstance(signed_as_usdc, PaymentPayload)
    accepted = signed_as_usdc.accepted.model_copy(update={"extra": OFFER.extra})
    found = candidate(signed_as_usdc.model_copy(update={"accepted": accepted}))
    assert ev.check_signature(found, b"", None) == ev.Invalid(ev.INVALID_SIGNATURE, PAYER.address)


async def test_bad_v_byte_fails_verification_like_the_sdk(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    sig = payload.payload["signature"]
    found = candidate(with_auth(payload, signature=sig[:-2] + "05"))
    result = ev.check_signature(found, b"", None)
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.FAILED_TO_VERIFY_SIGNATURE


async def test_v_as_zero_or_one_is_accepted(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    sig = payload.payload["signature"]
    low_v = f"{int(sig[-2:], 16) - 27:02x}"
    assert (
        ev.check_signature(candidate(with_auth(payload, signature=sig[:-2] + low_v)), b"", None)
        is None
    )


async def test_long_signature_without_code_is_an_undeployed_wallet(pay: PayFunction) -> None:
    payload = with_auth(await pay(PAYER, OFFER), signature="0x" + "11" * 100)
    result = ev.check_signature(candidate(payload), b"", None)
    assert result == ev.Invalid(ev.UNDEPLOYED_SMART_WALLET, PAYER.address)


async def test_payer_with_code_defers_to_eip1271_and_simulation(pay: PayFunction) -> None:
    found = candidate(await pay(PAYER, OFFER))
    assert ev.check_signature(found, b"\x60\x00", True) is None
    assert ev.check_signature(found, b"\x60\x00", False) is None  # the token's revert decides
    facts = ev.ChainFacts(
        payer_code=b"\x60\x00",
        eip1271_valid=False,
        simulation_error="execution reverted: FiatTokenV2: invalid signature",
    )
    assert ev.check_onchain(found, facts) == ev.Invalid(
        ev.INVALID_SIGNATURE, PAYER.address, facts.simulation_error
    )


def wrap_6492(factory: str, calldata: bytes, inner: bytes) -> str:
    return (
        "0x"
        + (
            abi_encode(["address", "bytes", "bytes"], [factory, calldata, inner]) + ev.ERC6492_MAGIC
        ).hex()
    )


async def test_erc6492_needs_an_allow_listed_factory(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    inner = bytes.fromhex(payload.payload["signature"][2:])
    found = candidate(with_auth(payload, signature=wrap_6492(FACTORY, b"\x01\x02", inner)))
    assert found.erc6492 is not None
    assert found.erc6492.has_deployment_info
    assert found.inner_signature == inner
    assert ev.check_signature(found, b"", None) == ev.Invalid(ev.FACTORY_NOT_ALLOWED, PAYER.address)
    assert ev.check_signature(found, b"", None, [FACTORY.lower()]) is None
    # Without deployment info (zero factory) the inner signature is checked as usual.
    plain = candidate(with_auth(payload, signature=wrap_6492("0x" + "00" * 20, b"", inner)))
    assert ev.check_signature(plain, b"", None) is None


async def test_plain_signatures_are_checked_offline_whoever_the_payer(
    pay: PayFunction,
) -> None:
    """x402gw's own rule: a plain 65-byte signature must recover to `from`; wrapped and longer
    signatures are left to the chain (contract wallets)."""
    payload = await pay(PAYER, OFFER)
    sig = payload.payload["signature"]
    inner = bytes.fromhex(sig[2:])
    assert ev.check_plain_signature(candidate(payload)) is None
    stranger = Account.create()
    foreign = with_auth(payload, **{"from": stranger.address})
    assert ev.check_plain_signature(candidate(foreign)) == ev.Invalid(
        ev.INVALID_SIGNATURE, stranger.address
    )
    bad_v = ev.check_plain_signature(candidate(with_auth(payload, signature=sig[:-2] + "05")))
    assert isinstance(bad_v, ev.Invalid)
    assert bad_v.reason == ev.FAILED_TO_VERIFY_SIGNATURE
    zero_r = "0x" + "00" * 32 + sig[66:]
    assert ev.check_plain_signature(candidate(with_auth(payload, signature=zero_r))) == (
        ev.Invalid(ev.INVALID_SIGNATURE, PAYER.address)
    )
    wrapped = with_auth(foreign, signature=wrap_6492("0x" + "00" * 20, b"", inner))
    assert ev.check_plain_signature(candidate(wrapped)) is None
    assert (
        ev.check_plain_signature(candidate(with_auth(foreign, signature="0x" + "11" * 100))) is None
    )


async def test_malformed_erc6492_wrapper(pay: PayFunction) -> None:
    payload = with_auth(
        await pay(PAYER, OFFER), signature="0x" + ("00" * 8 + ev.ERC6492_MAGIC.hex())
    )
    result = ev.check_offchain(payload, OFFER, now=now())
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.FAILED_TO_VERIFY_SIGNATURE


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("execution reverted: FiatTokenV2: authorization is expired", ev.VALID_BEFORE),
        ("execution reverted: FiatTokenV2: authorization is not yet valid", ev.VALID_AFTER),
        (
            "execution reverted: FiatTokenV2: authorization is used or canceled",
            ev.NONCE_ALREADY_USED,
        ),
        ("execution reverted: ERC20: transfer amount exceeds balance", ev.INSUFFICIENT_BALANCE),
        ("execution reverted: FiatTokenV2: invalid signature", ev.INVALID_SIGNATURE),
        ("ERC20InsufficientBalance(0x..)", ev.INSUFFICIENT_BALANCE),
        ("AuthorizationAlreadyUsed", ev.NONCE_ALREADY_USED),
        ("execution reverted", None),
        ("something else", None),
    ],
)
def test_map_revert(message: str, reason: str | None) -> None:
    assert ev.map_revert(message) == reason


async def test_onchain_facts(pay: PayFunction) -> None:
    found = candidate(await pay(PAYER, OFFER))
    assert ev.check_onchain(found, ev.ChainFacts(payer_code=b"")) is None
    assert (
        ev.check_onchain(
            found, ev.ChainFacts(payer_code=b"", simulated=False, simulation_error="x")
        )
        is None
    )
    missing = ev.check_onchain(found, ev.ChainFacts(payer_code=b"", asset_deployed=False))
    assert missing == ev.Invalid(ev.ASSET_NOT_DEPLOYED, PAYER.address)
    broke = ev.ChainFacts(
        payer_code=b"",
        simulation_error="execution reverted: ERC20: transfer amount exceeds balance",
    )
    result = ev.check_onchain(found, broke)
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.INSUFFICIENT_BALANCE
    # A non-revert failure is never mapped from its text, only diagnosed.
    rpc_failure = ev.ChainFacts(
        payer_code=b"", simulation_error="invalid signature", simulation_reverted=False
    )
    result = ev.check_onchain(found, rpc_failure)
    assert isinstance(result, ev.Invalid)
    assert result.reason == ev.SIMULATION_FAILED


@pytest.mark.parametrize(
    ("diagnosis", "reason"),
    [
        (None, ev.SIMULATION_FAILED),
        (ev.Diagnosis(authorization_used=None), ev.EIP3009_NOT_SUPPORTED),
        (ev.Diagnosis(authorization_used=True), ev.NONCE_ALREADY_USED),
        (ev.Diagnosis(authorization_used=False, token_name="USDC"), ev.TOKEN_NAME_MISMATCH),
        (
            ev.Diagnosis(authorization_used=False, token_name="USD Coin", token_version="1"),
            ev.TOKEN_VERSION_MISMATCH,
        ),
        (ev.Diagnosis(authorization_used=False, balance=9999), ev.INSUFFICIENT_BALANCE),
        (
            ev.Diagnosis(
                authorization_used=False, token_name="USD Coin", token_version="2", balance=10000
            ),
            ev.SIMULATION_FAILED,
        ),
    ],
)
async def test_diagnosis_of_unexplained_reverts(
    pay: PayFunction, diagnosis: ev.Diagnosis | None, reason: str
) -> None:
    found = candidate(await pay(PAYER, OFFER))
    facts = ev.ChainFacts(
        payer_code=b"", simulation_error="execution reverted", diagnosis=diagnosis
    )
    result = ev.check_onchain(found, facts)
    assert isinstance(result, ev.Invalid)
    assert result.reason == reason


async def test_find_matching_offer_v2(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER)
    assert isinstance(payload, PaymentPayload)
    other = OFFER.model_copy(update={"amount": "5"})
    assert ev.find_matching_offer(payload, [other, OFFER]) == OFFER
    assert ev.find_matching_offer(payload, [other]) is None
    # Addresses compare as plain strings: the client echoes the offer verbatim.
    assert (
        ev.find_matching_offer(payload, [OFFER.model_copy(update={"pay_to": MERCHANT.lower()})])
        is None
    )
    # The offer's extra must be a subset of what was accepted.
    richer = payload.model_copy(
        update={
            "accepted": payload.accepted.model_copy(update={"extra": {**OFFER.extra, "note": 1}})
        }
    )
    assert ev.find_matching_offer(richer, [OFFER]) == OFFER
    assert (
        ev.find_matching_offer(
            payload, [OFFER.model_copy(update={"extra": {**OFFER.extra, "x": 1}})]
        )
        is None
    )
    for field, value in [
        ("asset", MERCHANT),
        ("max_timeout_seconds", 60),
        ("network", "eip155:1"),
        ("scheme", "upto"),
    ]:
        assert ev.find_matching_offer(payload, [OFFER.model_copy(update={field: value})]) is None
    assert ev.find_matching_offer(payload, [OFFER_V1]) is None


async def test_find_matching_offer_v1(pay: PayFunction) -> None:
    payload = await pay(PAYER, OFFER_V1)
    assert ev.find_matching_offer(payload, [OFFER_V1]) == OFFER_V1
    assert (
        ev.find_matching_offer(payload, [OFFER_V1.model_copy(update={"network": "base"})]) is None
    )


def test_transfer_log_matching() -> None:
    auth = ev.Authorization(PAYER.address, MERCHANT, 10000, 0, 10**10, b"\x01" * 32)
    topic0 = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
    log = {
        "address": TOKEN.lower(),
        "topics": [
            topic0,
            bytes(12) + bytes.fromhex(PAYER.address[2:]),
            "0x" + "00" * 12 + MERCHANT[2:],
        ],
        "data": (10000).to_bytes(32, "big"),
    }
    assert ev.transfer_log_matches([log], TOKEN, auth)
    assert not ev.transfer_log_matches([{**log, "data": (9999).to_bytes(32, "big")}], TOKEN, auth)
    assert not ev.transfer_log_matches([{**log, "address": MERCHANT}], TOKEN, auth)
    assert not ev.transfer_log_matches([{**log, "topics": log["topics"][:2]}], TOKEN, auth)
    assert not ev.transfer_log_matches([{**log, "data": "0xzz"}], TOKEN, auth)
    assert not ev.transfer_log_matches([], TOKEN, auth)


uint = st.integers(min_value=0, max_value=2**256 - 1)
timestamps = st.integers(min_value=0, max_value=2**40)


@settings(max_examples=60, deadline=None)
@given(
    value=uint,
    valid_after=timestamps,
    valid_before=timestamps,
    nonce=st.binary(min_size=32, max_size=32),
    key=st.binary(min_size=32, max_size=32),
)
def test_sign_and_recover_round_trip(
    value: int, valid_after: int, valid_before: int, nonce: bytes, key: bytes
) -> None:
    try:
        signer = Account.from_key(key)
    except Exception:  # zero or out-of-range keys
        return
    auth = ev.Authorization(signer.address, MERCHANT, value, valid_after, valid_before, nonce)
    assert (
        ev.recover_signer(DOMAIN, auth, ev.sign_authorization(DOMAIN, auth, key)) == signer.address
    )


@settings(max_examples=80, deadline=None)
@given(
    clock=st.integers(min_value=10**9, max_value=2**40),
    offset=st.integers(min_value=-100, max_value=100),
)
def test_valid_before_margin_property(clock: int, offset: int) -> None:
    auth = ev.Authorization(PAYER.address, MERCHANT, 10000, 0, clock + offset, b"\x07" * 32)
    payload = PaymentPayload(payload=self_signed(PAYER, DOMAIN, auth), accepted=OFFER)
    result = ev.check_offchain(payload, OFFER, now=clock)
    if offset < ev.VALID_BEFORE_MARGIN:
        assert result == ev.Invalid(ev.VALID_BEFORE, PAYER.address)
    else:
        assert isinstance(result, ev.Candidate)
        assert ev.check_signature(result, b"", None) is None


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["signature", "authorization", "x"]),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=70),
            lambda c: st.dictionaries(
                st.sampled_from(["from", "to", "value", "validAfter", "validBefore", "nonce"]),
                c,
                max_size=6,
            ),
            max_leaves=8,
        ),
    )
)
def test_arbitrary_payload_dicts_give_a_reason_not_an_exception(inner: dict[str, Any]) -> None:
    payload = PaymentPayload(payload=inner, accepted=OFFER)
    result = ev.check_offchain(payload, OFFER, now=now())
    assert isinstance(result, ev.Invalid | ev.Candidate)


def test_recover_signer_rejects_unrecoverable_signatures() -> None:
    auth = ev.Authorization(PAYER.address, MERCHANT, 1, 0, 10, bytes(32))
    with pytest.raises(InvalidPaymentPayload):
        ev.recover_signer(DOMAIN, auth, b"\x01" * 64)
    with pytest.raises(InvalidPaymentPayload):
        ev.recover_signer(DOMAIN, auth, bytes(64) + b"\x1b")  # r = s = 0


raw_addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)


@settings(max_examples=150, deadline=None)
@given(
    from_address=raw_addresses,
    to=raw_addresses,
    value=uint,
    valid_after=uint,
    valid_before=uint,
    nonce=st.binary(min_size=32, max_size=32),
)
def test_authorization_digest_equals_the_eth_abi_encoding(
    from_address: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> None:
    auth = ev.Authorization(from_address, to, value, valid_after, valid_before, nonce)
    struct = abi_encode(
        ["bytes32", "address", "address", "uint256", "uint256", "uint256", "bytes32"],
        [ev._TRANSFER_TYPEHASH, from_address, to, value, valid_after, valid_before, nonce],
    )
    assert keccak(struct) == bytes(ev.signable(DOMAIN, auth).body)  # eth_account agrees too
    expected = keccak(b"\x19\x01" + ev.domain_separator(DOMAIN) + keccak(struct))
    assert ev.authorization_digest(DOMAIN, auth) == expected


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("value", 2**256, OverflowError),
        ("valid_after", -1, OverflowError),
        ("valid_before", "10", TypeError),
        ("nonce", bytes(33), ValueError),
        ("to", "0x" + "zz" * 20, ValueError),
        ("from_address", "0x1234", ValueError),
    ],
)
def test_authorization_digest_refuses_what_eth_abi_refuses(
    field: str, value: Any, error: type[Exception]
) -> None:
    fields: dict[str, Any] = {
        "from_address": PAYER.address,
        "to": MERCHANT,
        "value": 1,
        "valid_after": 0,
        "valid_before": 10,
        "nonce": bytes(32),
    }
    fields[field] = value
    with pytest.raises(error):
        ev.authorization_digest(DOMAIN, ev.Authorization(**fields))
