"""Exact-scheme EVM rules (EIP-3009): EIP-712 digest, signature checks and the SDK's verify order.

Pure: callers pass ``now`` and the chain facts they fetched (see :mod:`x402gw.chain`). Reasons are
the official SDK's strings, returned in the SDK's order so clients see the same codes either way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from coincurve import PublicKey
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from x402gw._abi import address_word, bytes32_word, uint_word
from x402gw.errors import InvalidPaymentPayload, UnknownNetwork
from x402gw.networks import NETWORKS, NetworkRegistry
from x402gw.wire import (
    AnyPaymentPayload,
    ExactEvmPayload,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)

SCHEME_EXACT: Final = "exact"
VALID_BEFORE_MARGIN: Final = 6  # seconds the SDK demands between now and validBefore
EIP1271_MAGIC: Final = bytes.fromhex("1626ba7e")
ERC6492_MAGIC: Final = bytes.fromhex("6492" * 16)

# Reason strings, as the official SDK (x402 2.25) emits them.
NO_MATCHING_REQUIREMENTS: Final = "No matching payment requirements"
INVALID_PAYLOAD: Final = "invalid_payload"
INVALID_X402_VERSION: Final = "invalid_x402_version"
UNSUPPORTED_SCHEME: Final = "unsupported_scheme"
NETWORK_MISMATCH: Final = "network_mismatch"
FAILED_TO_GET_NETWORK_CONFIG: Final = "invalid_exact_evm_failed_to_get_network_config"
MISSING_EIP712_DOMAIN: Final = "missing_eip712_domain"
RECIPIENT_MISMATCH: Final = "invalid_exact_evm_payload_recipient_mismatch"
VALUE_MISMATCH: Final = "invalid_exact_evm_payload_authorization_value_mismatch"
VALID_BEFORE: Final = "invalid_exact_evm_payload_authorization_valid_before"
VALID_AFTER: Final = "invalid_exact_evm_payload_authorization_valid_after"
INVALID_SIGNATURE: Final = "invalid_exact_evm_payload_signature"
UNDEPLOYED_SMART_WALLET: Final = "invalid_exact_evm_payload_undeployed_smart_wallet"
FACTORY_NOT_ALLOWED: Final = "eip6492_factory_not_allowed"
FAILED_TO_VERIFY_SIGNATURE: Final = "invalid_exact_evm_failed_to_verify_signature"
ASSET_NOT_DEPLOYED: Final = "asset_not_deployed_contract"
NONCE_ALREADY_USED: Final = "invalid_exact_evm_nonce_already_used"
INSUFFICIENT_BALANCE: Final = "invalid_exact_evm_insufficient_balance"
TOKEN_NAME_MISMATCH: Final = "invalid_exact_evm_token_name_mismatch"
TOKEN_VERSION_MISMATCH: Final = "invalid_exact_evm_token_version_mismatch"
EIP3009_NOT_SUPPORTED: Final = "invalid_exact_evm_eip3009_not_supported"
SIMULATION_FAILED: Final = "invalid_exact_evm_transaction_simulation_failed"
TRANSFER_EVENT_MISMATCH: Final = "invalid_exact_evm_transfer_event_mismatch"
TRANSACTION_FAILED: Final = "transaction_failed"
SETTLEMENT_PENDING: Final = "settlement_pending"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_UINT = re.compile(r"[0-9]{1,78}")
_MAX_UINT256: Final = 2**256 - 1
_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_TRANSFER_TOPIC: Final = keccak(text="Transfer(address,address,uint256)")
_TRANSFER_TYPEHASH: Final = keccak(
    text="TransferWithAuthorization(address from,address to,uint256 value,"
    "uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)

_TRANSFER_TYPES: Final = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}

# Revert fragments (lower-case) -> reason; FiatToken strings and OpenZeppelin custom-error names.
_REVERT_REASONS: Final = (
    (("authorization is expired", "authorizationexpired"), VALID_BEFORE),
    (("authorization is not yet valid", "authorizationnotyetvalid"), VALID_AFTER),
    (
        ("authorization is used", "authorizationalreadyused", "authorizationusedorcanceled"),
        NONCE_ALREADY_USED,
    ),
    (("transfer amount exceeds balance", "erc20insufficientbalance"), INSUFFICIENT_BALANCE),
    (
        ("invalid signature", "signermismatch", "invalidsignaturev", "invalidsignatures"),
        INVALID_SIGNATURE,
    ),
)


@dataclass(frozen=True, slots=True)
class Domain:
    """The EIP-712 domain of an EIP-3009 token."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str


@dataclass(frozen=True, slots=True)
class Authorization:
    """A parsed TransferWithAuthorization message (addresses checksummed, uints as int)."""

    from_address: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    @classmethod
    def from_wire(cls, payload: ExactEvmPayload) -> Authorization:
        """Parse the wire strings; raises :class:`InvalidPaymentPayload` on any malformed field."""
        auth = payload.authorization
        return cls(
            from_address=_address(auth.from_, "from"),
            to=_address(auth.to, "to"),
            value=_uint(auth.value, "value"),
            valid_after=_uint(auth.valid_after, "validAfter"),
            valid_before=_uint(auth.valid_before, "validBefore"),
            nonce=_bytes32(auth.nonce, "nonce"),
        )

    def message(self) -> dict[str, Any]:
        """The typed-data message."""
        return {
            "from": self.from_address,
            "to": self.to,
            "value": self.value,
            "validAfter": self.valid_after,
            "validBefore": self.valid_before,
            "nonce": self.nonce,
        }


@dataclass(frozen=True, slots=True)
class Erc6492Signature:
    """An ERC-6492 wrapped signature: deploy ``factory`` with ``factory_calldata``, then check ``inner``."""

    factory: str
    factory_calldata: bytes
    inner: bytes

    @property
    def has_deployment_info(self) -> bool:
        """True when the wrapper names a factory call that would deploy the wallet."""
        return int(self.factory, 16) != 0 and len(self.factory_calldata) > 0


@dataclass(frozen=True, slots=True)
class Invalid:
    """A failed check: the SDK reason code, the payer if known, and an optional detail."""

    reason: str
    payer: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A payment that passed every off-chain rule; what the chain edge needs for the rest."""

    payer: str
    network: str
    token: str
    domain: Domain
    authorization: Authorization
    signature: bytes
    erc6492: Erc6492Signature | None
    digest: bytes

    @property
    def inner_signature(self) -> bytes:
        """The signature the token (or wallet) checks, with any ERC-6492 wrapper removed."""
        return self.erc6492.inner if self.erc6492 else self.signature


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Reads made only when a simulation revert could not be mapped (None = the call failed)."""

    authorization_used: bool | None = None
    token_name: str | None = None
    token_version: str | None = None
    balance: int | None = None


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What the chain said about a candidate, in the order the rules consult it."""

    payer_code: bytes
    eip1271_valid: bool | None = None  # asked only when the payer has code
    asset_deployed: bool = True
    simulated: bool = True  # False when settling (the SDK does not re-simulate there)
    simulation_error: str | None = None  # None: the eth_call succeeded
    simulation_reverted: bool = True  # False: the error was not a contract revert
    diagnosis: Diagnosis | None = None


# --------------------------------------------------------------------------------------------
# EIP-712


def typed_data(domain: Domain, authorization: Authorization) -> dict[str, Any]:
    """The full EIP-712 typed-data document of a TransferWithAuthorization."""
    return {
        "types": _TRANSFER_TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        },
        "message": authorization.message(),
    }


def signable(domain: Domain, authorization: Authorization) -> SignableMessage:
    """eth_account's encoding of the typed data (header = domain separator, body = struct hash)."""
    return encode_typed_data(full_message=typed_data(domain, authorization))


@functools.lru_cache(maxsize=256)
def domain_separator(domain: Domain) -> bytes:
    """The 32-byte EIP-712 domain separator (what the token's ``DOMAIN_SEPARATOR()`` returns)."""
    # eth_account only encodes whole documents; any message yields the same header.
    probe = Authorization(domain.verifying_contract, domain.verifying_contract, 0, 0, 0, bytes(32))
    return bytes(signable(domain, probe).header)


@functools.lru_cache(maxsize=1024)
def authorization_digest(domain: Domain, authorization: Authorization) -> bytes:
    """keccak256(0x1901 ‖ domainSeparator ‖ structHash): the hash that is signed."""
    # Encoded by hand (same bytes as eth_account's typed-data encoder, about 20x faster): the
    # digest is computed on every verify and settle.
    auth = authorization
    struct = keccak(
        _TRANSFER_TYPEHASH
        + address_word(auth.from_address)
        + address_word(auth.to)
        + uint_word(auth.value)
        + uint_word(auth.valid_after)
        + uint_word(auth.valid_before)
        + bytes32_word(auth.nonce)
    )
    return keccak(b"\x19\x01" + domain_separator(domain) + struct)


def sign_authorization(
    domain: Domain, authorization: Authorization, private_key: bytes | str
) -> bytes:
    """65-byte (r ‖ s ‖ v) signature of an authorization; for tests and Python payers."""
    signed = Account.sign_message(signable(domain, authorization), private_key)
    return bytes(signed.signature)


def recover_signer(domain: Domain, authorization: Authorization, signature: bytes) -> str:
    """Checksummed address that produced a 65-byte signature (v may be 0/1 or 27/28).

    Raises :class:`InvalidPaymentPayload` when the signature is not recoverable at all.
    """
    return _recover_digest(authorization_digest(domain, authorization), signature)


@functools.lru_cache(maxsize=1024)
def _recover_digest(digest: bytes, signature: bytes) -> str:
    """:func:`recover_signer` over a computed digest; verify and settle recover the same pair."""
    if len(signature) != 65:
        raise InvalidPaymentPayload(f"ECDSA signature must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise InvalidPaymentPayload(f"invalid signature v value {signature[64]}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N):
        raise InvalidPaymentPayload("signature r/s out of range")
    try:
        public = PublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises ValueError/TypeError for unrecoverable points
        raise InvalidPaymentPayload(f"signature does not recover: {exc}") from exc
    return _checksum("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())


def unwrap_erc6492(signature: bytes) -> Erc6492Signature | None:
    """Split an ERC-6492 wrapped signature; None when it carries no 6492 magic suffix."""
    if len(signature) < 32 or signature[-32:] != ERC6492_MAGIC:
        return None
    try:
        factory, calldata, inner = abi_decode(["address", "bytes", "bytes"], signature[:-32])
    except Exception as exc:  # eth_abi raises several decoding error types
        raise InvalidPaymentPayload(f"malformed ERC-6492 signature: {exc}") from exc
    return Erc6492Signature(to_checksum_address(factory), bytes(calldata), bytes(inner))


# --------------------------------------------------------------------------------------------
# Rules


def find_matching_offer(
    payload: AnyPaymentPayload,
    offers: Sequence[PaymentRequirements] | Sequence[PaymentRequirementsV1],
) -> PaymentRequirements | PaymentRequirementsV1 | None:
    """The offer a payment answers (resource-server check before any facilitator call).

    v2: ``accepted`` must equal an offer on scheme, network, amount, asset, payTo and
    maxTimeoutSeconds (plain comparison), and the offer's ``extra`` must be a subset of the
    accepted one. v1 payloads carry no ``accepted``: matching is on scheme and network only.
    """
    for offer in offers:
        if isinstance(payload, PaymentPayload) and isinstance(offer, PaymentRequirements):
            accepted = payload.accepted
            if (
                accepted.scheme == offer.scheme
                and accepted.network == offer.network
                and accepted.amount == offer.amount
                and accepted.asset == offer.asset
                and accepted.pay_to == offer.pay_to
                and accepted.max_timeout_seconds == offer.max_timeout_seconds
                and _is_subset(offer.extra, accepted.extra)
            ):
                return offer
        elif (
            isinstance(payload, PaymentPayloadV1)
            and isinstance(offer, PaymentRequirementsV1)
            and payload.scheme == offer.scheme
            and payload.network == offer.network
        ):
            return offer
    return None


def check_offchain(
    payload: AnyPaymentPayload,
    requirements: PaymentRequirements | PaymentRequirementsV1,
    *,
    now: int,
    networks: NetworkRegistry = NETWORKS,
) -> Candidate | Invalid:
    """Rules 1-8 of the SDK's exact-EVM verify plus the signature's pure parsing.

    Order: scheme, network, chain id, EIP-712 domain, recipient, value == amount,
    validBefore >= now + 6, validAfter <= now, then signature decoding.
    """
    try:
        evm = ExactEvmPayload.parse(payload.payload)
        raw_from = evm.authorization.from_
        auth = Authorization.from_wire(evm)
    except InvalidPaymentPayload as exc:
        return Invalid(INVALID_PAYLOAD, _claimed_payer(payload.payload), str(exc))
    payer = raw_from

    if isinstance(payload, PaymentPayload) and isinstance(requirements, PaymentRequirements):
        scheme_ok = payload.accepted.scheme == SCHEME_EXACT
        network_ok = payload.accepted.network == requirements.network
        amount_text = requirements.amount
        extra: Mapping[str, Any] | None = requirements.extra
        caip2_form = True
    elif isinstance(payload, PaymentPayloadV1) and isinstance(requirements, PaymentRequirementsV1):
        scheme_ok = payload.scheme == SCHEME_EXACT and requirements.scheme == SCHEME_EXACT
        network_ok = payload.network == requirements.network
        amount_text = requirements.max_amount_required
        extra = requirements.extra
        caip2_form = False
    else:
        return Invalid(INVALID_X402_VERSION, payer, "payload and requirements versions differ")

    if not scheme_ok:
        return Invalid(UNSUPPORTED_SCHEME, payer)
    if not network_ok:
        return Invalid(NETWORK_MISMATCH, payer)
    try:
        chain_id = _chain_id(requirements.network, caip2_form, networks)
    except UnknownNetwork as exc:
        return Invalid(FAILED_TO_GET_NETWORK_CONFIG, payer, str(exc))
    extra = extra or {}
    if "name" not in extra or "version" not in extra:
        return Invalid(MISSING_EIP712_DOMAIN, payer)
    if evm.authorization.to.lower() != requirements.pay_to.lower():
        return Invalid(RECIPIENT_MISMATCH, payer)
    try:
        amount = _uint(amount_text, "amount")
    except InvalidPaymentPayload as exc:
        return Invalid(INVALID_PAYLOAD, payer, str(exc))
    if auth.value != amount:
        return Invalid(VALUE_MISMATCH, payer)
    if auth.valid_before < now + VALID_BEFORE_MARGIN:
        return Invalid(VALID_BEFORE, payer)
    if auth.valid_after > now:
        return Invalid(VALID_AFTER, payer)
    if not evm.signature:
        return Invalid(INVALID_SIGNATURE, payer)
    try:
        signature = _hex_bytes(evm.signature, "signature")
        wrapped = unwrap_erc6492(signature)
        token = _address(requirements.asset, "asset")
        domain = Domain(str(extra["name"]), str(extra["version"]), chain_id, token)
        digest = authorization_digest(domain, auth)
    except (InvalidPaymentPayload, ValueError, TypeError) as exc:
        return Invalid(FAILED_TO_VERIFY_SIGNATURE, payer, str(exc))
    return Candidate(
        payer=auth.from_address,
        network=requirements.network,
        token=token,
        domain=domain,
        authorization=auth,
        signature=signature,
        erc6492=wrapped,
        digest=digest,
    )


def check_signature(
    candidate: Candidate,
    payer_code: bytes,
    eip1271_valid: bool | None,
    allowed_factories: Iterable[str] = (),
) -> Invalid | None:
    """Rule 9, routed by the payer's code as the SDK does; None means "go on to simulation".

    No code: an ERC-6492 wrapper with deployment info needs an allow-listed factory; otherwise a
    65-byte signature must recover to ``from``. Code: EIP-1271 decides, and a rejection is left
    to the simulation (which then reports the token's own verdict), exactly like the SDK.
    """
    payer = candidate.payer
    if payer_code:
        return None  # valid, or deferred to the simulation when isValidSignature said no
    wrapped = candidate.erc6492
    if wrapped is not None and wrapped.has_deployment_info:
        allowed = {f.strip().lower() for f in allowed_factories}
        if wrapped.factory.lower() not in allowed:
            return Invalid(FACTORY_NOT_ALLOWED, payer)
        return None
    if len(candidate.inner_signature) != 65:
        return Invalid(UNDEPLOYED_SMART_WALLET, payer)
    return _check_ecdsa(candidate, candidate.inner_signature)


def check_plain_signature(candidate: Candidate) -> Invalid | None:
    """x402gw's offline rule (not the SDK's): a plain (not ERC-6492 wrapped) 65-byte signature
    must recover to ``from``, whatever code ``from`` holds; None for other signatures.

    The SDK would ask a contract ``from`` (EIP-1271) about such a signature; refusing it here
    costs no RPC call. Contract wallets are served when they sign otherwise (longer signatures,
    or ERC-6492 wrapped ones).
    """
    if candidate.erc6492 is not None or len(candidate.signature) != 65:
        return None
    return _check_ecdsa(candidate, candidate.signature)


def _check_ecdsa(candidate: Candidate, signature: bytes) -> Invalid | None:
    payer = candidate.payer
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if v not in (0, 1):
        return Invalid(FAILED_TO_VERIFY_SIGNATURE, payer, f"invalid v value {signature[64]}")
    try:
        recovered = _recover_digest(candidate.digest, signature)  # the digest is computed once
    except InvalidPaymentPayload:
        return Invalid(INVALID_SIGNATURE, payer)
    if recovered.lower() != payer.lower():
        return Invalid(INVALID_SIGNATURE, payer)
    return None


def map_revert(message: str) -> str | None:
    """SDK reason for a token revert message (FiatToken strings, OZ custom errors); None if unknown."""
    lowered = message.lower()
    for fragments, reason in _REVERT_REASONS:
        if any(fragment in lowered for fragment in fragments):
            return reason
    return None


def diagnose(candidate: Candidate, diagnosis: Diagnosis | None) -> str:
    """Reason for a simulation failure no revert string explained (the SDK's Multicall3 probe)."""
    if diagnosis is None:
        return SIMULATION_FAILED
    if diagnosis.authorization_used is None:
        return EIP3009_NOT_SUPPORTED
    if diagnosis.authorization_used:
        return NONCE_ALREADY_USED
    if diagnosis.token_name is not None and diagnosis.token_name != candidate.domain.name:
        return TOKEN_NAME_MISMATCH
    if diagnosis.token_version is not None and diagnosis.token_version != candidate.domain.version:
        return TOKEN_VERSION_MISMATCH
    if diagnosis.balance is not None and diagnosis.balance < candidate.authorization.value:
        return INSUFFICIENT_BALANCE
    return SIMULATION_FAILED


def check_onchain(
    candidate: Candidate,
    facts: ChainFacts,
    allowed_factories: Iterable[str] = (),
) -> Invalid | None:
    """Rules 9-11 over fetched facts: signature routing, asset has code, simulation outcome."""
    invalid = check_signature(candidate, facts.payer_code, facts.eip1271_valid, allowed_factories)
    if invalid is not None:
        return invalid
    if not facts.asset_deployed:
        return Invalid(ASSET_NOT_DEPLOYED, candidate.payer)
    if not facts.simulated or facts.simulation_error is None:
        return None
    reason = map_revert(facts.simulation_error) if facts.simulation_reverted else None
    if reason is None:
        reason = diagnose(candidate, facts.diagnosis)
    return Invalid(reason, candidate.payer, facts.simulation_error)


def transfer_log_matches(
    logs: Iterable[Mapping[str, Any]], token: str, authorization: Authorization
) -> bool:
    """True when receipt logs hold ``Transfer(from, to, value)`` emitted by ``token``."""
    return transfer_log_pays(
        logs, token, authorization.from_address, authorization.to, authorization.value
    )


def transfer_log_pays(
    logs: Iterable[Mapping[str, Any]], token: str, payer: str, pay_to: str, value: int
) -> bool:
    """True when receipt logs hold ``Transfer(payer, pay_to, value)`` emitted by ``token``."""
    topic0 = _TRANSFER_TOPIC
    sender, recipient = _address_bytes(payer), _address_bytes(pay_to)
    for log in logs:
        topics = [_to_bytes(t) for t in log.get("topics", [])]
        if (
            str(log.get("address", "")).lower() != token.lower()
            or len(topics) != 3
            or topics[0] != topic0
        ):
            continue
        data = _to_bytes(log.get("data", b""))
        if len(data) < 32:
            continue
        if (
            topics[1][-20:] == sender
            and topics[2][-20:] == recipient
            and int.from_bytes(data[-32:], "big") == value
        ):
            return True
    return False


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(_address(address, "address")[2:])


# --------------------------------------------------------------------------------------------
# helpers


def _chain_id(network: str, caip2_form: bool, networks: NetworkRegistry) -> int:
    if caip2_form != network.startswith("eip155:"):
        form = "CAIP-2 (eip155:<id>)" if caip2_form else "a v1 network name"
        raise UnknownNetwork(f"{network!r} is not {form}")
    return networks.chain_id(network)


def _claimed_payer(inner: Mapping[str, Any]) -> str | None:
    auth = inner.get("authorization")
    claimed = auth.get("from") if isinstance(auth, Mapping) else None
    return claimed if isinstance(claimed, str) else None


def _is_subset(small: Mapping[str, Any], big: Mapping[str, Any]) -> bool:
    return all(key in big and big[key] == value for key, value in small.items())


def _address(value: str, field: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise InvalidPaymentPayload(f"{field} is not an address: {value!r}")
    return _checksum(value)


@functools.lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    """EIP-55 form of a validated hex address: a keccak each time, and payers and payees recur."""
    return str(to_checksum_address(address))


def _uint(value: str, field: str) -> int:
    if not isinstance(value, str) or not _UINT.fullmatch(value):
        raise InvalidPaymentPayload(f"{field} is not a decimal uint: {value!r}")
    number = int(value)
    if number > _MAX_UINT256:
        raise InvalidPaymentPayload(f"{field} exceeds uint256")
    return number


def _hex_bytes(value: str, field: str) -> bytes:
    if not _HEX.fullmatch(value):
        raise InvalidPaymentPayload(f"{field} is not 0x-prefixed hex")
    return bytes.fromhex(value[2:])


def _bytes32(value: str, field: str) -> bytes:
    raw = _hex_bytes(value, field) if isinstance(value, str) else b""
    if len(raw) != 32:
        raise InvalidPaymentPayload(f"{field} must be 32 bytes of 0x hex")
    return raw


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value.startswith("0x") else value
        try:
            return bytes.fromhex(text)
        except ValueError:
            return b""
    return b""
