"""The web3 edge on a real anvil: verification facts, simulation reasons, settlement, nonces, outages."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from coincurve import PrivateKey
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from lab.anvil import free_port
from paylab import local_facilitator
from x402.mechanisms.evm.exact.facilitator import ExactEvmScheme as SdkFacilitator
from x402.mechanisms.evm.exact.facilitator import ExactEvmSchemeConfig
from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1 as SdkFacilitatorV1
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
from x402.schemas import PaymentPayload as SdkPayload
from x402.schemas import PaymentRequirements as SdkRequirements
from x402.schemas.v1 import PaymentPayloadV1 as SdkPayloadV1
from x402.schemas.v1 import PaymentRequirementsV1 as SdkRequirementsV1

from x402gw import exact_evm as ev
from x402gw.chain import (
    MULTICALL3,
    ChainClient,
    FactGatherer,
    Settler,
    sign_dynamic_fee_transaction,
    transfer_calldata,
)
from x402gw.errors import ChainUnavailable, RpcError, SettlementPending, SettlementReverted
from x402gw.facilitator import LocalFacilitator
from x402gw.wire import (
    AnyPaymentPayload,
    PaymentPayload,
    PaymentRequirements,
    PaymentRequirementsV1,
)

if TYPE_CHECKING:
    from conftest import EvmLab


PayFunction = Callable[[LocalAccount, Any], Awaitable[AnyPaymentPayload]]
OfferFactory = Callable[..., PaymentRequirements]
Verifier = Callable[..., LocalFacilitator]


@pytest.fixture
async def verifier(evm: EvmLab) -> AsyncIterator[Verifier]:
    """``verifier(**options)``: a LocalFacilitator on the lab chain with those options (factories,
    clock), closed after the test. Verification has one path: the facilitator's."""
    made: list[LocalFacilitator] = []

    def make(**options: Any) -> LocalFacilitator:
        made.append(local_facilitator(evm.anvil.url, evm.operator, evm.network, **options))
        return made[-1]

    try:
        yield make
    finally:
        for facilitator in made:
            await facilitator.aclose()


async def sdk_rules(
    lab: EvmLab,
    client: ChainClient,
    payload: AnyPaymentPayload,
    offer: PaymentRequirements | PaymentRequirementsV1,
    factories: Iterable[str] = (),
) -> tuple[bool, str | None]:
    """(valid, reason) by the SDK's rules alone over the facilitator's fact path: what
    LocalFacilitator decides without x402gw's own offline rule (a plain signature must recover to
    ``from``), which refuses contract wallets signing with their owner's plain key."""
    checked = ev.check_offchain(payload, offer, now=now())
    if isinstance(checked, ev.Candidate):
        gatherer = FactGatherer(client, sender=lab.operator.address, allowed_factories=factories)
        checked = ev.check_onchain(checked, await gatherer.gather(checked), factories) or checked
    return (False, checked.reason) if isinstance(checked, ev.Invalid) else (True, None)


def now() -> int:
    return int(time.time())


def candidate_of(
    payload: AnyPaymentPayload,
    offer: PaymentRequirements | PaymentRequirementsV1,
    at: int | None = None,
) -> ev.Candidate:
    checked = ev.check_offchain(payload, offer, now=now() if at is None else at)
    assert isinstance(checked, ev.Candidate), checked
    return checked


def self_signed(
    lab: EvmLab,
    signer: LocalAccount,
    offer: PaymentRequirements,
    *,
    from_address: str | None = None,
    valid_after: int = 0,
    valid_before: int | None = None,
    name: str = "USD Coin",
    version: str = "2",
) -> PaymentPayload:
    """A payment signed by our own helper, for windows and signers the SDK client never produces."""
    auth = ev.Authorization(
        from_address=from_address or signer.address,
        to=offer.pay_to,
        value=int(offer.amount),
        valid_after=valid_after,
        valid_before=now() + 300 if valid_before is None else valid_before,
        nonce=os.urandom(32),
    )
    domain = ev.Domain(name, version, 31337, lab.token)
    inner = {
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
    return PaymentPayload(payload=inner, accepted=offer)


# ---- token and reads -----------------------------------------------------------------------


async def test_token_domain_separator_matches_ours(evm: EvmLab, client: ChainClient) -> None:
    onchain = await client.call(evm.token, keccak(text="DOMAIN_SEPARATOR()")[:4])
    assert onchain == ev.domain_separator(ev.Domain("USD Coin", "2", 31337, evm.token))
    assert await client.token_domain(evm.token) == ("USD Coin", "2")
    assert await client.chain_id() == 31337


async def test_reads(evm: EvmLab, client: ChainClient) -> None:
    assert await client.token_balance(evm.token, evm.payer.address) == 5_000_000
    assert await client.get_code(evm.payer.address) == b""
    assert len(await client.get_code(evm.token)) > 100
    assert await client.authorization_state(evm.token, evm.payer.address, bytes(32)) is False
    assert await client.eth_balance(evm.operator.address) > 0


# ---- verify --------------------------------------------------------------------------------


async def test_sdk_v2_payment_verifies(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    result = await local.verify(await pay(evm.payer, offer()), offer())
    assert result.is_valid, result
    assert result.payer == evm.payer.address


async def test_sdk_v1_payment_verifies(
    evm: EvmLab,
    local: LocalFacilitator,
    pay: PayFunction,
    offer_v1: Callable[..., PaymentRequirementsV1],
) -> None:
    result = await local.verify(await pay(evm.payer, offer_v1()), offer_v1())
    assert result.is_valid, result


async def test_insufficient_balance(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    broke = Account.create()
    result = await local.verify(await pay(broke, offer()), offer())
    assert (result.is_valid, result.invalid_reason) == (False, ev.INSUFFICIENT_BALANCE)
    too_much = offer(amount=str(5_000_001))
    result = await local.verify(await pay(evm.payer, too_much), too_much)
    assert result.invalid_reason == ev.INSUFFICIENT_BALANCE


async def test_wrong_domain_name_is_refused(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    # The client signs for a "USDC"-named domain and the server repeats that claim; the token disagrees.
    usdc = offer(extra={"name": "USDC", "version": "2"})
    result = await local.verify(await pay(evm.payer, usdc), usdc)
    assert result.invalid_reason == ev.INVALID_SIGNATURE
    assert "FiatTokenV2: invalid signature" in (result.invalid_message or "")


async def test_wrong_domain_version_is_refused(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    v1 = offer(extra={"name": "USD Coin", "version": "1"})
    result = await local.verify(await pay(evm.payer, v1), v1)
    assert result.invalid_reason == ev.INVALID_SIGNATURE


async def test_tampered_offchain_fields_never_reach_the_chain(
    evm: EvmLab, verifier: Verifier, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    local = verifier()
    result = await local.verify(payload, offer(amount="20000"))
    assert result.invalid_reason == ev.VALUE_MISMATCH
    result = await local.verify(payload, offer(pay_to=Account.create().address))
    assert result.invalid_reason == ev.RECIPIENT_MISMATCH
    result = await verifier(clock=lambda: now() + 3600).verify(payload, offer())
    assert result.invalid_reason == ev.VALID_BEFORE


@pytest.mark.parametrize(
    ("valid_after", "valid_before", "at", "reason"),
    [
        (0, 1_000_000, 0, ev.VALID_BEFORE),  # signed long ago: the token says "expired"
        (2**40, 2**41, 2**40, ev.VALID_AFTER),  # the token says "not yet valid"
    ],
)
async def test_token_time_window_reverts_map_to_sdk_reasons(
    evm: EvmLab,
    client: ChainClient,
    offer: OfferFactory,
    valid_after: int,
    valid_before: int,
    at: int,
    reason: str,
) -> None:
    payload = self_signed(
        evm, evm.payer, offer(), valid_after=valid_after, valid_before=valid_before
    )
    found = candidate_of(payload, offer(), at=at)  # a skewed clock lets the off-chain rules pass
    facts = await FactGatherer(client).gather(found)
    assert facts.simulation_reverted
    assert ev.check_onchain(found, facts) == ev.Invalid(
        reason, evm.payer.address, facts.simulation_error
    )


async def test_asset_without_code(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    nowhere = offer(asset=Account.create().address)
    result = await local.verify(await pay(evm.payer, nowhere), nowhere)
    assert result.invalid_reason == ev.ASSET_NOT_DEPLOYED


async def test_asset_without_eip3009_is_diagnosed(
    evm: EvmLab, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    not_a_token = offer(asset=wallet)
    result = await local.verify(await pay(evm.payer, not_a_token), not_a_token)
    assert result.invalid_reason == ev.EIP3009_NOT_SUPPORTED


async def test_erc6492_from_unknown_factory_is_refused(
    evm: EvmLab, verifier: Verifier, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    inner = bytes.fromhex(payload.payload["signature"][2:])
    wrapped = (
        abi_encode(["address", "bytes", "bytes"], [evm.token, b"\x01", inner]) + ev.ERC6492_MAGIC
    )
    counterfactual = self_signed(evm, evm.payer, offer(), from_address=Account.create().address)
    counterfactual.payload["signature"] = "0x" + wrapped.hex()
    result = await verifier().verify(counterfactual, offer())
    assert result.invalid_reason == ev.FACTORY_NOT_ALLOWED
    # Allowed, but the "factory" call deploys nothing: the token sees an EOA whose key did not sign.
    allowed = await verifier(allowed_factories=[evm.token]).verify(counterfactual, offer())
    assert allowed.invalid_reason == ev.INVALID_SIGNATURE


async def test_replay_after_settlement(
    evm: EvmLab, client: ChainClient, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    settler = Settler(client, evm.operator)
    await settler.settle(candidate_of(payload, offer()))
    result = await local.verify(payload, offer())
    assert result.invalid_reason == ev.NONCE_ALREADY_USED
    with pytest.raises(SettlementReverted, match="authorization is used") as caught:
        await settler.settle(candidate_of(payload, offer()))
    assert ev.map_revert(caught.value.reason) == ev.NONCE_ALREADY_USED


async def test_cancelled_authorization_counts_as_used(
    evm: EvmLab, client: ChainClient, local: LocalFacilitator, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    found = candidate_of(payload, offer())
    cancel_hash = keccak(
        abi_encode(
            ["bytes32", "address", "bytes32"],
            [
                keccak(text="CancelAuthorization(address authorizer,bytes32 nonce)"),
                evm.payer.address,
                found.authorization.nonce,
            ],
        )
    )
    digest = keccak(b"\x19\x01" + ev.domain_separator(found.domain) + cancel_hash)
    signed = Account.unsafe_sign_hash(digest, evm.payer.key)
    data = keccak(text="cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)")[
        :4
    ] + abi_encode(
        ["address", "bytes32", "uint8", "bytes32", "bytes32"],
        [
            evm.payer.address,
            found.authorization.nonce,
            signed.v,
            signed.r.to_bytes(32, "big"),
            signed.s.to_bytes(32, "big"),
        ],
    )
    evm.anvil.transact(evm.operator, evm.token, data)
    assert await client.authorization_state(evm.token, evm.payer.address, found.authorization.nonce)
    result = await local.verify(payload, offer())
    assert result.invalid_reason == ev.NONCE_ALREADY_USED


async def test_receive_with_authorization_needs_the_payee_as_caller(
    evm: EvmLab, client: ChainClient, offer: OfferFactory
) -> None:
    payload = self_signed(evm, evm.payer, offer())
    found = candidate_of(payload, offer())
    auth, sig = found.authorization, found.signature
    data = keccak(
        text="receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )[:4] + abi_encode(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"],
        [
            auth.from_address,
            auth.to,
            auth.value,
            auth.valid_after,
            auth.valid_before,
            auth.nonce,
            sig,
        ],
    )
    with pytest.raises(SettlementReverted, match="caller must be the payee"):
        await client.call(evm.token, data, sender=evm.operator.address)


# ---- EIP-1271 contract wallets ---------------------------------------------------------------


async def test_contract_wallet_pays_via_eip1271(
    evm: EvmLab, client: ChainClient, local: LocalFacilitator, offer: OfferFactory
) -> None:
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    payload = self_signed(evm, evm.payer, offer(), from_address=wallet)
    assert await sdk_rules(evm, client, payload, offer()) == (True, None)
    # x402gw's offline rule: a plain signature must recover to the payer, code or not
    result = await local.verify(payload, offer())
    assert (result.is_valid, result.invalid_reason) == (False, ev.INVALID_SIGNATURE)
    settlement = await Settler(client, evm.operator).settle(candidate_of(payload, offer()))
    assert settlement.receipt.status == 1
    assert evm.balance(wallet) == 40_000
    assert evm.balance(evm.merchant) == 10_000


async def test_contract_wallet_rejecting_the_signer(
    evm: EvmLab, client: ChainClient, local: LocalFacilitator, offer: OfferFactory
) -> None:
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    stranger = Account.create()
    payload = self_signed(evm, stranger, offer(), from_address=wallet)
    found = candidate_of(payload, offer())
    facts = await FactGatherer(client).gather(found)
    assert facts.eip1271_valid is False
    # decided by the token's own revert, or offline by x402gw's rule
    assert await sdk_rules(evm, client, payload, offer()) == (False, ev.INVALID_SIGNATURE)
    assert (await local.verify(payload, offer())).invalid_reason == ev.INVALID_SIGNATURE


def counterfactual_payment(
    lab: EvmLab, offer: PaymentRequirements
) -> tuple[PaymentPayload, str, str]:
    """A payment from a not-yet-deployed EIP-1271 wallet (owner: the payer), wrapped per ERC-6492.

    Returns (payload, factory address, predicted wallet address); the wallet already holds tokens.
    """
    factory = lab.anvil.deploy("WalletFactory", [], []).address
    salt = os.urandom(32)
    predicted = (
        "0x"
        + lab.anvil.call(
            factory,
            keccak(text="predict(address,bytes32)")[:4]
            + abi_encode(["address", "bytes32"], [lab.payer.address, salt]),
        )[-20:].hex()
    )
    lab.anvil.mint(lab.token, predicted, 50_000)
    payload = self_signed(lab, lab.payer, offer, from_address=predicted)
    deploy_call = keccak(text="deploy(address,bytes32)")[:4] + abi_encode(
        ["address", "bytes32"], [lab.payer.address, salt]
    )
    inner = bytes.fromhex(payload.payload["signature"][2:])
    wrapped = (
        abi_encode(["address", "bytes", "bytes"], [factory, deploy_call, inner]) + ev.ERC6492_MAGIC
    )
    payload.payload["signature"] = "0x" + wrapped.hex()
    return payload, factory, predicted


async def test_counterfactual_wallet_verifies_and_settles_with_an_allowed_factory(
    evm: EvmLab, client: ChainClient, verifier: Verifier, offer: OfferFactory
) -> None:
    payload, factory, wallet = counterfactual_payment(evm, offer())
    refused = await verifier().verify(payload, offer())
    assert refused.invalid_reason == ev.FACTORY_NOT_ALLOWED
    sent: list[str] = []

    async def after_broadcast(tx_hash: str) -> None:
        sent.append(tx_hash)

    local = verifier(allowed_factories=[factory.lower()], after_broadcast=after_broadcast)
    result = await local.verify(payload, offer())
    assert result.is_valid, result
    assert await client.get_code(wallet) == b""  # simulation only; nothing deployed yet
    settled = await local.settle(payload, offer())
    assert settled.success, settled
    assert sent == [settled.transaction]  # the transfer (after the deployment) ran the hook
    receipt = await client.get_receipt(settled.transaction)
    assert receipt is not None
    assert receipt.status == 1
    assert await client.get_code(wallet) != b""
    assert evm.balance(wallet) == 40_000
    assert evm.balance(evm.merchant) == 10_000


async def test_counterfactual_wallet_without_multicall3_cannot_be_simulated(
    evm: EvmLab, verifier: Verifier, offer: OfferFactory
) -> None:
    payload, factory, _wallet = counterfactual_payment(evm, offer())
    evm.anvil.rpc("anvil_setCode", MULTICALL3, "0x")
    result = await verifier(allowed_factories=[factory]).verify(payload, offer())
    assert result.invalid_reason == ev.SIMULATION_FAILED
    assert "Multicall3" in (result.invalid_message or "")


# ---- settlement ----------------------------------------------------------------------------


async def test_settlement_moves_balances(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    settler = Settler(client, evm.operator)
    payer_before = evm.balance(evm.payer.address)
    eth_before = await client.eth_balance(evm.operator.address)
    sent: list[tuple[str, bool]] = []

    async def on_sent(tx_hash: str, mined: bool) -> None:
        sent.append((tx_hash, mined))

    settlement = await settler.settle(candidate_of(payload, offer()), on_sent=on_sent)
    assert [tx_hash for tx_hash, _mined in sent] == [settlement.tx_hash]  # told once, this hash
    assert evm.balance(evm.payer.address) == payer_before - 10_000
    assert evm.balance(evm.merchant) == 10_000
    assert await client.eth_balance(evm.operator.address) < eth_before  # the operator paid the gas
    receipt = await client.get_receipt(settlement.tx_hash)
    assert receipt == settlement.receipt
    assert receipt is not None
    assert receipt.status == 1
    assert ev.transfer_log_matches(
        receipt.logs, evm.token, candidate_of(payload, offer()).authorization
    )


async def test_authorization_tx_finds_the_settling_transaction(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    found = candidate_of(payload, offer())
    nonce = found.authorization.nonce
    assert await client.authorization_tx(evm.token, evm.payer.address, nonce) is None  # unused
    settlement = await Settler(client, evm.operator).settle(found)
    assert await client.authorization_tx(evm.token, evm.payer.address, nonce) == settlement.tx_hash
    assert await client.authorization_tx(evm.token, evm.payer.address.lower(), nonce) == (
        settlement.tx_hash
    )
    assert await client.authorization_tx(evm.token, evm.merchant, nonce) is None  # other authorizer
    assert await client.authorization_tx(evm.token, evm.payer.address, bytes(32)) is None
    evm.anvil.rpc("anvil_mine", "0x5")
    # the log is older than the window asked for
    assert (
        await client.authorization_tx(evm.token, evm.payer.address, nonce, lookback_blocks=2)
        is None
    )


async def test_v1_payment_settles(
    evm: EvmLab,
    client: ChainClient,
    pay: PayFunction,
    offer_v1: Callable[..., PaymentRequirementsV1],
) -> None:
    payload = await pay(evm.payer, offer_v1(amount="20000"))
    await Settler(client, evm.operator).settle(candidate_of(payload, offer_v1(amount="20000")))
    assert evm.balance(evm.merchant) == 20_000


async def test_unknown_receipt_is_none(client: ChainClient) -> None:
    assert await client.get_receipt("0x" + "ab" * 32) is None


async def test_concurrent_settlements_never_collide(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    count = 100  # the figure: 100 concurrent settlements on one operator key
    payloads = [await pay(evm.payer, offer()) for _ in range(count)]
    settler = Settler(client, evm.operator)
    start_nonce = int(evm.anvil.rpc("eth_getTransactionCount", evm.operator.address, "pending"), 16)
    settlements = await asyncio.gather(
        *(settler.settle(candidate_of(p, offer())) for p in payloads)
    )
    assert len({s.tx_hash for s in settlements}) == count
    assert all(s.receipt.status == 1 for s in settlements)
    nonces = sorted(
        int(evm.anvil.rpc("eth_getTransactionByHash", s.tx_hash)["nonce"], 16) for s in settlements
    )
    assert nonces == list(range(start_nonce, start_nonce + count))
    assert evm.balance(evm.merchant) == count * 10_000
    assert evm.balance(evm.payer.address) == 5_000_000 - count * 10_000


async def test_nonce_resyncs_after_an_out_of_band_transaction(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    settler = Settler(client, evm.operator)
    await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
    # The same operator key sends a transaction behind the settler's back: its cached nonce is stale.
    evm.anvil.transact(evm.operator, evm.merchant, b"", value=1)
    await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
    assert evm.balance(evm.merchant) == 20_000


async def test_receipt_timeout_is_settlement_pending(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    settler = Settler(client, evm.operator, receipt_timeout=0.3)
    sent: list[tuple[str, bool]] = []

    async def on_sent(tx_hash: str, mined: bool) -> None:
        sent.append((tx_hash, mined))

    evm.anvil.rpc("evm_setAutomine", False)
    try:
        with pytest.raises(SettlementPending) as caught:
            await settler.settle(candidate_of(payload, offer()), on_sent=on_sent)
        assert sent == [(caught.value.tx_hash, False)]  # told before the wait, not yet mined
        assert await client.get_receipt(caught.value.tx_hash) is None
        evm.anvil.rpc("evm_mine")
    finally:
        evm.anvil.rpc("evm_setAutomine", True)
    receipt = await client.get_receipt(caught.value.tx_hash)
    assert receipt is not None
    assert receipt.status == 1
    assert evm.balance(evm.merchant) == 10_000


# ---- outages -------------------------------------------------------------------------------


async def test_rpc_down_is_chain_unavailable(
    evm: EvmLab, pay: PayFunction, offer: OfferFactory
) -> None:
    down = ChainClient(f"http://127.0.0.1:{free_port()}", timeout=2.0, retries=0)
    try:
        with pytest.raises(ChainUnavailable):
            await down.get_code(evm.payer.address)
        verifier = LocalFacilitator(down, Settler(down, evm.operator), evm.network)
        payload = await pay(evm.payer, offer())
        with pytest.raises(ChainUnavailable):
            await verifier.verify(payload, offer())
        with pytest.raises(ChainUnavailable):
            await Settler(down, evm.operator).settle(
                candidate_of(await pay(evm.payer, offer()), offer())
            )
        with pytest.raises(ChainUnavailable):
            await down.get_receipt("0x" + "ab" * 32)
    finally:
        await down.aclose()


async def test_operator_without_gas_money_gets_a_typed_error_then_recovers(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    penniless = Account.create()
    settler = Settler(client, penniless)
    with pytest.raises(RpcError, match=r"(?i)insufficient funds"):
        await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
    evm.anvil.set_eth_balance(penniless.address, 10**18)
    settlement = await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
    assert settlement.receipt.status == 1
    assert evm.balance(evm.merchant) == 10_000


class FakeRpc:
    """A loopback JSON-RPC endpoint answering every call with one canned reply (errors only).

    A batch gets one canned reply per call, or (``batch_as_one``) a single reply for the lot.
    """

    def __init__(self, status: int, body: bytes, *, batch_as_one: bool = False) -> None:
        self.status, self.body, self.batch_as_one = status, body, batch_as_one
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeRpc:
        async def handle(request: web.Request) -> web.Response:
            call = await request.json()
            calls = call if isinstance(call, list) else [call]
            bodies = [self.body.replace(b'"ID"', str(one["id"]).encode()) for one in calls]
            body = bodies[0]
            if isinstance(call, list) and not self.batch_as_one:
                body = b"[" + b",".join(bodies) + b"]"
            return web.Response(status=self.status, body=body, content_type="application/json")

        app = web.Application()
        app.router.add_post("/", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


RPC_ERROR = b'{"jsonrpc":"2.0","id":"ID","error":{"code":-32005,"message":"rate limited"}}'


async def test_rpc_error_reply_is_rpc_error_not_unavailable(
    evm: EvmLab, pay: PayFunction, offer: OfferFactory
) -> None:
    async with FakeRpc(200, RPC_ERROR) as fake:
        rpc = ChainClient(fake.url, retries=0)
        try:
            with pytest.raises(RpcError, match="rate limited") as caught:
                await rpc.get_code(evm.payer.address)
            assert not isinstance(caught.value, ChainUnavailable)
            found = candidate_of(await pay(evm.payer, offer()), offer())
            error, reverted = await rpc.simulate_transfer(found)
            assert error is not None
            assert "rate limited" in error
            assert reverted is False
            assert await rpc.diagnose(found) == ev.Diagnosis()  # every probe failed
        finally:
            await rpc.aclose()


async def test_batched_facts_classify_each_reply_like_single_calls(
    evm: EvmLab, pay: PayFunction, offer: OfferFactory
) -> None:
    found = candidate_of(await pay(evm.payer, offer()), offer())
    async with FakeRpc(200, RPC_ERROR) as fake:
        rpc = ChainClient(fake.url, retries=0)
        try:
            with pytest.raises(RpcError, match="rate limited") as caught:
                await rpc.eoa_facts(found, asset_code=True, simulate=True, sender=None)
            assert not isinstance(caught.value, ChainUnavailable)
        finally:
            await rpc.aclose()


async def test_batch_answered_with_one_reply_is_chain_unavailable(
    evm: EvmLab, pay: PayFunction, offer: OfferFactory
) -> None:
    found = candidate_of(await pay(evm.payer, offer()), offer())
    async with FakeRpc(200, RPC_ERROR, batch_as_one=True) as fake:
        rpc = ChainClient(fake.url, retries=0)
        try:
            with pytest.raises(ChainUnavailable, match="to a batch"):
                await rpc.eoa_facts(found, asset_code=False, simulate=True, sender=None)
        finally:
            await rpc.aclose()


async def test_batched_facts_match_the_single_calls(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    found = candidate_of(await pay(evm.payer, offer()), offer())
    facts = await client.eoa_facts(found, asset_code=True, simulate=True, sender=None)
    assert facts == (
        await client.get_code(found.payer),
        await client.get_code(found.token),
        await client.simulate_transfer(found),
    )
    assert facts[1]
    assert facts[2] == (None, True)
    broke = candidate_of(await pay(evm.payer, offer(amount=str(10**30))), offer(amount=str(10**30)))
    _, _, simulation = await client.eoa_facts(broke, asset_code=False, simulate=True, sender=None)
    assert simulation == await client.simulate_transfer(broke)
    assert simulation is not None
    assert simulation[0] is not None
    assert simulation[1] is True


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, b"busy"), (200, b"<html>not json</html>"), (200, b'{"jsonrpc":"2.0"}')],
)
async def test_broken_rpc_replies_are_chain_unavailable(
    evm: EvmLab, status: int, body: bytes
) -> None:
    async with FakeRpc(status, body) as fake:
        rpc = ChainClient(fake.url, retries=0)
        try:
            with pytest.raises(ChainUnavailable):
                await rpc.get_code(evm.payer.address)
        finally:
            await rpc.aclose()


async def test_facts_gathered_without_the_allowlist_fail_closed(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    payload = await pay(evm.payer, offer())
    inner = bytes.fromhex(payload.payload["signature"][2:])
    wrapped = (
        abi_encode(["address", "bytes", "bytes"], [evm.token, b"\x01", inner]) + ev.ERC6492_MAGIC
    )
    counterfactual = self_signed(evm, evm.payer, offer(), from_address=Account.create().address)
    counterfactual.payload["signature"] = "0x" + wrapped.hex()
    found = candidate_of(counterfactual, offer())
    facts = await FactGatherer(client).gather(found)  # no factories: the signature step refuses
    result = ev.check_onchain(found, facts, [evm.token])  # a different allowlist here
    assert result is not None
    assert result.reason == ev.SIMULATION_FAILED


# ---- conformance with the official SDK facilitator --------------------------------------------


def sdk_verdict(
    evm: EvmLab,
    payload: AnyPaymentPayload,
    offer: PaymentRequirements | PaymentRequirementsV1,
    factories: list[str],
) -> tuple[bool, str | None]:
    """What the official SDK facilitator (x402 2.25, web3 signer on the same anvil) says."""
    signer = FacilitatorWeb3Signer("0x" + bytes(evm.operator.key).hex(), evm.anvil.url)
    if isinstance(payload, PaymentPayload):
        config = ExactEvmSchemeConfig(eip6492_allowed_factories=factories)
        result = SdkFacilitator(signer, config).verify(
            SdkPayload.model_validate(payload.to_json_dict()),
            SdkRequirements.model_validate(offer.to_json_dict()),
        )
    else:
        result = SdkFacilitatorV1(signer).verify(
            SdkPayloadV1.model_validate(payload.to_json_dict()),
            SdkRequirementsV1.model_validate(offer.to_json_dict()),
        )
    return result.is_valid, result.invalid_reason


SCENARIOS: dict[str, str | None] = {  # scenario -> the reason both verifiers must give
    "ok": None,
    "ok_v1": None,
    "broke_payer": ev.INSUFFICIENT_BALANCE,
    "domain_name_usdc": ev.INVALID_SIGNATURE,
    "value_mismatch": ev.VALUE_MISMATCH,
    "recipient_mismatch": ev.RECIPIENT_MISMATCH,
    "valid_before_too_close": ev.VALID_BEFORE,
    "valid_after_future": ev.VALID_AFTER,
    "asset_without_code": ev.ASSET_NOT_DEPLOYED,
    "contract_wallet_ok": None,
    "contract_wallet_stranger": ev.INVALID_SIGNATURE,
    "long_signature_from_eoa": ev.UNDEPLOYED_SMART_WALLET,
    "erc6492_factory_not_allowed": ev.FACTORY_NOT_ALLOWED,
    "replay": ev.NONCE_ALREADY_USED,
    "erc6492_allowed_factory": None,
    "asset_not_eip3009": ev.EIP3009_NOT_SUPPORTED,
}


OFFLINE_REFUSALS: dict[str, str] = {  # scenario -> x402gw's own offline refusal (not the SDK's)
    "contract_wallet_ok": ev.INVALID_SIGNATURE,  # the owner's plain key signing for a wallet
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_verdicts_match_the_sdk_facilitator(
    evm: EvmLab,
    client: ChainClient,
    verifier: Verifier,
    pay: PayFunction,
    offer: OfferFactory,
    offer_v1: Callable[..., PaymentRequirementsV1],
    scenario: str,
) -> None:
    req: PaymentRequirements | PaymentRequirementsV1 = offer()
    payload: AnyPaymentPayload
    factories: list[str] = []
    if scenario == "ok":
        payload = await pay(evm.payer, req)
    elif scenario == "ok_v1":
        req = offer_v1()
        payload = await pay(evm.payer, req)
    elif scenario == "broke_payer":
        payload = await pay(Account.create(), req)
    elif scenario == "domain_name_usdc":
        req = offer(extra={"name": "USDC", "version": "2"})
        payload = await pay(evm.payer, req)
    elif scenario == "value_mismatch":
        payload = await pay(evm.payer, req)
        req = offer(amount="20000")
    elif scenario == "recipient_mismatch":
        payload = await pay(evm.payer, req)
        req = offer(pay_to=Account.create().address)
    elif scenario == "valid_before_too_close":
        payload = self_signed(evm, evm.payer, req, valid_before=now() + 3)
    elif scenario == "valid_after_future":
        payload = self_signed(evm, evm.payer, req, valid_after=now() + 600)
    elif scenario == "asset_without_code":
        req = offer(asset=Account.create().address)
        payload = await pay(evm.payer, req)
    elif scenario in ("contract_wallet_ok", "contract_wallet_stranger"):
        wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
        evm.anvil.mint(evm.token, wallet, 50_000)
        signer = evm.payer if scenario == "contract_wallet_ok" else Account.create()
        payload = self_signed(evm, signer, req, from_address=wallet)
    elif scenario == "long_signature_from_eoa":
        payload = await pay(evm.payer, req)
        payload.payload["signature"] = "0x" + "11" * 100
    elif scenario == "erc6492_factory_not_allowed":
        payload = self_signed(evm, evm.payer, req, from_address=Account.create().address)
        inner = bytes.fromhex(payload.payload["signature"][2:])
        wrapped = (
            abi_encode(["address", "bytes", "bytes"], [evm.token, b"\x01", inner])
            + ev.ERC6492_MAGIC
        )
        payload.payload["signature"] = "0x" + wrapped.hex()
    elif scenario == "erc6492_allowed_factory":
        payload, factory, _wallet = counterfactual_payment(evm, req)
        factories = [factory]
    elif scenario == "asset_not_eip3009":
        req = offer(
            asset=evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
        )
        payload = await pay(evm.payer, req)
    elif scenario == "replay":
        payload = await pay(evm.payer, req)
        await Settler(client, evm.operator).settle(candidate_of(payload, req))
    else:  # pragma: no cover - the parametrization lists every scenario
        raise AssertionError(scenario)

    rules = await sdk_rules(evm, client, payload, req, factories)
    theirs = await asyncio.to_thread(sdk_verdict, evm, payload, req, factories)
    assert rules == theirs
    assert theirs == (SCENARIOS[scenario] is None, SCENARIOS[scenario])
    ours = await verifier(allowed_factories=factories).verify(payload, req)
    refused = OFFLINE_REFUSALS.get(scenario)
    assert (ours.is_valid, ours.invalid_reason) == (theirs if refused is None else (False, refused))


# ---- hot-path signing and raw JSON-RPC ------------------------------------------------------

_SIGNER = Account.from_key("0x" + "42" * 32)
_uint = st.integers(min_value=0, max_value=2**256 - 1)


@settings(max_examples=60, deadline=None)
@given(
    chain_id=st.integers(min_value=1, max_value=2**64),
    nonce=st.integers(min_value=0, max_value=2**64 - 1),
    tip=_uint,
    max_fee=_uint,
    gas=st.integers(min_value=21_000, max_value=2**63),
    to=st.binary(min_size=20, max_size=20),
    data=st.binary(max_size=600),
    value=_uint,
)
def test_signed_transaction_is_byte_identical_to_eth_account(
    chain_id: int, nonce: int, tip: int, max_fee: int, gas: int, to: bytes, data: bytes, value: int
) -> None:
    ours = sign_dynamic_fee_transaction(
        PrivateKey(bytes(_SIGNER.key)),
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee=tip,
        max_fee=max_fee,
        gas=gas,
        to="0x" + to.hex(),
        data=data,
        value=value,
    )
    reference = _SIGNER.sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
            "gas": gas,
            "to": to_checksum_address(to),
            "value": value,
            "data": data,
        }
    )
    assert ours == bytes(reference.raw_transaction)
    assert Account.recover_transaction(ours) == _SIGNER.address


@pytest.mark.parametrize(
    ("field", "value"),
    [("nonce", -1), ("gas", 2**256), ("max_fee", True), ("to", "0x1234"), ("to", None)],
)
def test_signing_refuses_bad_fields(field: str, value: Any) -> None:
    fields: dict[str, Any] = {
        "chain_id": 1,
        "nonce": 0,
        "max_priority_fee": 1,
        "max_fee": 2,
        "gas": 21_000,
        "to": "0x" + "11" * 20,
        "data": b"",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        sign_dynamic_fee_transaction(PrivateKey(bytes(_SIGNER.key)), **fields)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":"ID","result":"not hex"}',
        b'{"jsonrpc":"2.0","id":"ID","result":"0xZZ"}',
        b'{"jsonrpc":"2.0","id":"ID","result":{"blockNumber":"0x1","status":"0x1"}}',
        b'{"jsonrpc":"2.0","id":"ID","result":7}',
    ],
)
async def test_malformed_results_are_chain_unavailable(body: bytes) -> None:
    async with FakeRpc(200, body) as fake:
        rpc = ChainClient(fake.url, retries=0)
        try:
            with pytest.raises(ChainUnavailable):
                await (
                    rpc.get_receipt("0x" + "ab" * 32)
                    if b"blockNumber" in body or b":7" in body
                    else rpc.get_code("0x" + "11" * 20)
                )
        finally:
            await rpc.aclose()


async def test_base_fee_outrunning_the_cached_price_is_repriced(
    evm: EvmLab, client: ChainClient, pay: PayFunction, offer: OfferFactory
) -> None:
    settler = Settler(client, evm.operator)
    first = await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
    assert first.receipt.status == 1
    cached = settler._fee_cache
    assert cached is not None
    base_fee = evm.anvil.rpc("eth_getBlockByNumber", "latest", False)["baseFeePerGas"]
    evm.anvil.rpc("anvil_setNextBlockBaseFeePerGas", hex(cached[1] * 10))
    evm.anvil.rpc("evm_mine")
    try:
        second = await settler.settle(candidate_of(await pay(evm.payer, offer()), offer()))
        assert second.receipt.status == 1
        assert settler._fee_cache is not None
        assert settler._fee_cache[1] > cached[1] * 10
        assert evm.balance(evm.merchant) == 20_000
    finally:  # a snapshot revert does not restore the node's next base fee
        evm.anvil.rpc("anvil_setNextBlockBaseFeePerGas", base_fee)
        evm.anvil.rpc("evm_mine")


# ---- hand-encoded calldata -------------------------------------------------------------------

_address = st.binary(min_size=20, max_size=20).map(to_checksum_address)
_TWA_TYPES = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]


@settings(max_examples=150, deadline=None)
@given(
    from_address=_address,
    to=_address,
    value=_uint,
    valid_after=_uint,
    valid_before=_uint,
    nonce=st.binary(min_size=32, max_size=32),
    signature=st.one_of(st.binary(min_size=65, max_size=65), st.binary(max_size=300)),
)
def test_transfer_calldata_equals_the_eth_abi_encoding(
    from_address: str,
    to: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    signature: bytes,
) -> None:
    auth = ev.Authorization(from_address, to, value, valid_after, valid_before, nonce)
    domain = ev.Domain("USD Coin", "2", 31337, to)
    found = ev.Candidate(from_address, "eip155:31337", to, domain, auth, signature, None, bytes(32))
    head = [from_address, to, value, valid_after, valid_before, nonce]
    if len(signature) == 65:
        v = signature[64] + 27 if signature[64] < 27 else signature[64]
        expected = keccak(
            text="transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,"
            "uint8,bytes32,bytes32)"
        )[:4] + abi_encode(
            [*_TWA_TYPES, "uint8", "bytes32", "bytes32"],
            [*head, v, signature[:32], signature[32:64]],
        )
    else:
        expected = keccak(
            text="transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
        )[:4] + abi_encode([*_TWA_TYPES, "bytes"], [*head, signature])
    assert transfer_calldata(found) == expected


# ---- the JSON-RPC transport ------------------------------------------------------------------


class LoopbackHttp:
    """A raw loopback HTTP/1.1 server: ``answer(request_body)`` gives (status, body), or None to
    drop the connection without a reply. Keeps connections alive like a node."""

    def __init__(self, answer: Callable[[bytes], tuple[int, bytes] | None]) -> None:
        self.answer = answer
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests += 1
                reply = self.answer(body)
                if reply is None:
                    break
                status, payload = reply
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> LoopbackHttp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _echo(call: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call["id"], "result": f"{call['method']}{call['params']}"}


async def test_batch_replies_out_of_order_are_matched_by_id() -> None:
    def reversed_batch(body: bytes) -> tuple[int, bytes]:
        calls = json.loads(body)
        if isinstance(calls, dict):
            return 200, json.dumps(_echo(calls)).encode()
        return 200, json.dumps([_echo(call) for call in reversed(calls)]).encode()

    async with LoopbackHttp(reversed_batch) as node:
        rpc = ChainClient(node.url)
        try:
            calls: list[tuple[str, list[Any]]] = [("eth_a", [1]), ("eth_b", [2]), ("eth_c", [3])]
            replies = await rpc.request_batch(calls)
            assert [reply["result"] for reply in replies] == ["eth_a[1]", "eth_b[2]", "eth_c[3]"]
            assert await rpc.request("eth_x", ["0xab"]) == "eth_x['0xab']"
        finally:
            await rpc.aclose()


async def test_batch_reply_missing_an_id_is_chain_unavailable() -> None:
    def short_batch(body: bytes) -> tuple[int, bytes]:
        return 200, json.dumps([_echo(call) for call in json.loads(body)][1:] * 2).encode()

    async with LoopbackHttp(short_batch) as node:
        rpc = ChainClient(node.url)
        try:
            with pytest.raises(ChainUnavailable, match="to a batch"):
                await rpc.request_batch([("eth_a", []), ("eth_b", [])])
        finally:
            await rpc.aclose()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"oops", r"^RPC unreachable: ClientResponseError: 500"),
        (200, b"<html>garbage", r"^RPC answered a body that is not JSON$"),  # no upstream body
        (200, b"\xff\xfe", r"^RPC answered a body that is not JSON"),
    ],
)
async def test_bad_http_answers_are_chain_unavailable(
    status: int, body: bytes, message: str
) -> None:
    async with LoopbackHttp(lambda _: (status, body)) as node:
        rpc = ChainClient(node.url)
        try:
            with pytest.raises(ChainUnavailable, match=message):
                await rpc.request("eth_chainId", [])
            with pytest.raises(ChainUnavailable, match=message):
                await rpc.request_batch([("eth_chainId", []), ("eth_blockNumber", [])])
        finally:
            await rpc.aclose()


async def test_closed_port_is_chain_unavailable() -> None:
    rpc = ChainClient(f"http://127.0.0.1:{free_port()}", retries=2)
    try:
        with pytest.raises(ChainUnavailable, match=r"^RPC unreachable: ClientConnectorError"):
            await rpc.request("eth_chainId", [])
    finally:
        await rpc.aclose()


@pytest.mark.parametrize("retries", [0, 2])
async def test_one_dropped_connection_is_retried(retries: int) -> None:
    def drop_first(body: bytes) -> tuple[int, bytes] | None:
        if node.requests == 1:
            return None
        return 200, json.dumps(_echo(json.loads(body))).encode()

    async with LoopbackHttp(drop_first) as node:
        rpc = ChainClient(node.url, retries=retries)
        try:
            if retries:
                assert await rpc.request("eth_chainId", []) == "eth_chainId[]"
                assert node.requests == 2
            else:
                with pytest.raises(ChainUnavailable, match="ServerDisconnectedError"):
                    await rpc.request("eth_chainId", [])
        finally:
            await rpc.aclose()


def test_sessions_are_per_event_loop(evm: EvmLab) -> None:
    rpc = ChainClient(evm.anvil.url)
    sessions = []

    async def use(close: bool) -> None:
        assert await rpc.chain_id() == 31337
        assert await rpc.eth_balance(evm.operator.address) > 0
        sessions.append(rpc.transport._session())
        if close:
            await rpc.aclose()

    asyncio.run(use(close=False))  # the loop dies with its session open ...
    asyncio.run(use(close=True))  # ... and the next loop gets its own
    assert sessions[0] is not sessions[1]
    assert sessions[1].closed
    assert not rpc.transport._sessions


@pytest.mark.parametrize("automine", [True, False], ids=["mined-nonce-too-low", "pooled-known"])
async def test_broadcast_resent_after_a_lost_reply_is_one_transaction(
    evm: EvmLab, pay: PayFunction, offer: OfferFactory, automine: bool
) -> None:
    """The node takes the transaction but the reply is lost: the transport re-sends the same raw
    bytes, the node answers "nonce too low" (mined) or "already known" (pooled), and the settler
    reports its own transaction instead of signing another."""
    import httpx

    dropped: list[bytes] = []

    def relay(body: bytes) -> tuple[int, bytes] | None:
        answer = httpx.post(
            evm.anvil.url, content=body, headers={"content-type": "application/json"}
        )
        if b"eth_sendRawTransaction" in body and not dropped:
            dropped.append(body)
            return None  # delivered to the node, reply lost
        return answer.status_code, answer.content

    payload = await pay(evm.payer, offer())
    start = int(evm.anvil.rpc("eth_blockNumber"), 16)
    async with LoopbackHttp(relay) as node:
        rpc = ChainClient(node.url)
        evm.anvil.rpc("evm_setAutomine", automine)
        try:
            candidate = candidate_of(payload, offer())
            tx_hash = await Settler(rpc, evm.operator).send(
                candidate.token, transfer_calldata(candidate)
            )
            if not automine:
                assert evm.anvil.rpc("eth_getTransactionByHash", tx_hash) is not None
                evm.anvil.rpc("evm_mine")
        finally:
            evm.anvil.rpc("evm_setAutomine", True)
            await rpc.aclose()
    assert len(dropped) == 1
    mined = []
    for number in range(start + 1, int(evm.anvil.rpc("eth_blockNumber"), 16) + 1):
        mined += evm.anvil.rpc("eth_getBlockByNumber", hex(number), False)["transactions"]
    assert mined == [tx_hash]
    assert int(evm.anvil.rpc("eth_getTransactionReceipt", tx_hash)["status"], 16) == 1
    assert evm.balance(evm.merchant) == 10_000
