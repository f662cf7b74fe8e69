"""The operator's gas money: a settlement is capped in gas, and a facilitator serving others
settles only the (asset, payTo) pairs it was configured for.

The attacker's token is hand-assembled EVM code that answers every call with ``1`` after
burning about a million gas: it passes verification and, uncapped, costs the operator the burn.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from paylab import PRICE, local_facilitator
from rpclab import RpcRelay
from selfsign import signed_payment

from x402gw import exact_evm as ev
from x402gw.chain import ChainClient, Settler, transfer_calldata
from x402gw.errors import FacilitatorConfigError, GasCapExceeded
from x402gw.facilitator import DEFAULT_SETTLE_GAS_CAP, GAS_CAP_EXCEEDED, PAYMENT_NOT_ALLOWED

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction


BURN_LOOPS = 40_000  # x 26 gas per loop: about 1.04M gas per call


def gas_burner_code(loops: int = BURN_LOOPS) -> bytes:
    """Creation code of a contract whose every call loops ``loops`` times, then returns 1."""
    runtime = (
        b"\x62" + loops.to_bytes(3, "big")  # PUSH3 loops
        + b"\x5b"  # JUMPDEST (offset 4)
        + b"\x60\x01\x90\x03"  # PUSH1 1, SWAP1, SUB: counter - 1
        + b"\x80\x60\x04\x57"  # DUP1, PUSH1 4, JUMPI: loop while non-zero
        + b"\x60\x01\x60\x00\x52"  # MSTORE(0, 1)
        + b"\x60\x20\x60\x00\xf3"  # RETURN(0, 32)
    )  # fmt: skip
    init = (
        b"\x60" + bytes([len(runtime)])  # PUSH1 size
        + b"\x80\x60\x0b\x60\x00\x39"  # DUP1, PUSH1 11 (offset of runtime), PUSH1 0, CODECOPY
        + b"\x60\x00\xf3"  # PUSH1 0, RETURN(0, size)
    )  # fmt: skip
    return init + runtime


def deploy_gas_burner(evm: EvmLab) -> str:
    receipt = evm.anvil.transact(evm.anvil.deployer, None, gas_burner_code())
    return to_checksum_address(receipt["contractAddress"])


def eth_balance(evm: EvmLab, address: str) -> int:
    return int(evm.anvil.rpc("eth_getBalance", address, "latest"), 16)


def tx_count(evm: EvmLab, address: str) -> int:
    return int(evm.anvil.rpc("eth_getTransactionCount", address, "latest"), 16)


async def test_a_gas_burning_token_is_refused_at_estimation_and_costs_nothing(
    evm: EvmLab, offer: OfferFactory
) -> None:
    fake = deploy_gas_burner(evm)
    requirements = offer(asset=fake)
    payload = signed_payment(Account.create(), requirements)  # any key will do
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    balance, sent = eth_balance(evm, evm.operator.address), tx_count(evm, evm.operator.address)
    try:
        assert (await facilitator.verify(payload, requirements)).is_valid  # it looks fine
        settled = await facilitator.settle(payload, requirements)
    finally:
        await facilitator.aclose()
    assert settled.success is False
    assert settled.error_reason == GAS_CAP_EXCEEDED
    assert settled.transaction == ""
    assert str(DEFAULT_SETTLE_GAS_CAP) in (settled.error_message or "")
    assert eth_balance(evm, evm.operator.address) == balance
    assert tx_count(evm, evm.operator.address) == sent


async def test_a_real_settlement_fits_the_default_cap_with_room(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    try:
        settled = await facilitator.settle(payload, requirements)
    finally:
        await facilitator.aclose()
    assert settled.success, settled
    receipt = evm.anvil.rpc("eth_getTransactionReceipt", settled.transaction)
    assert int(receipt["gasUsed"], 16) * 3 // 2 <= DEFAULT_SETTLE_GAS_CAP
    assert evm.balance(evm.merchant) == PRICE


async def test_the_cap_is_configurable_and_bounds_the_gas_limit(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    tight = local_facilitator(evm.anvil.url, evm.operator, evm.network, max_settle_gas=30_000)
    try:
        refused = await tight.settle(await pay(evm.payer, requirements), requirements)
    finally:
        await tight.aclose()
    assert refused.error_reason == GAS_CAP_EXCEEDED
    assert evm.balance(evm.merchant) == 0

    candidate = ev.check_offchain(
        await pay(evm.payer, requirements), requirements, now=int(time.time())
    )
    assert isinstance(candidate, ev.Candidate)
    data = transfer_calldata(candidate)
    call = {"from": evm.operator.address, "to": evm.token, "data": "0x" + data.hex()}
    estimate = int(evm.anvil.rpc("eth_estimateGas", call), 16)
    client = ChainClient(evm.anvil.url)
    try:
        settler = Settler(client, evm.operator)
        with pytest.raises(GasCapExceeded) as caught:
            await settler.send(evm.token, data, max_gas=estimate - 1)
        assert (caught.value.estimate, caught.value.cap) == (estimate, estimate - 1)
        tx_hash = await settler.send(evm.token, data, max_gas=estimate)
    finally:
        await client.aclose()
    tx = evm.anvil.rpc("eth_getTransactionByHash", tx_hash)
    assert int(tx["gas"], 16) == estimate  # the limit is the cap, not estimate x 1.2
    assert evm.balance(evm.merchant) == PRICE


# --- the allow-list of (asset, payTo) pairs -----------------------------------------------------


async def test_only_allow_listed_asset_and_pay_to_pairs_are_served(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    fake = deploy_gas_burner(evm)
    stranger = Account.create().address
    refused = {
        "fake_asset": offer(asset=fake),
        "other_pay_to": offer(pay_to=stranger),
    }
    allowed = [(evm.token.lower(), evm.merchant.upper().replace("0X", "0x"))]  # case-insensitive
    balance = eth_balance(evm, evm.operator.address)
    async with RpcRelay(evm.anvil.url) as relay:
        facilitator = local_facilitator(
            relay.url(), evm.operator, evm.network, allowed_payments=allowed
        )
        try:
            for requirements in refused.values():
                payload = signed_payment(evm.payer, requirements)
                verified = await facilitator.verify(payload, requirements)
                settled = await facilitator.settle(payload, requirements)
                assert verified.invalid_reason == PAYMENT_NOT_ALLOWED
                assert settled.error_reason == PAYMENT_NOT_ALLOWED
                assert "asset and payTo" in (verified.invalid_message or "")
            assert relay.requests == 0  # refused before any RPC call
            requirements = offer()
            settled = await facilitator.settle(await pay(evm.payer, requirements), requirements)
        finally:
            await facilitator.aclose()
    assert settled.success, settled
    assert evm.balance(evm.merchant) == PRICE
    assert evm.balance(stranger) == 0
    assert eth_balance(evm, evm.operator.address) < balance  # only the allowed one cost gas


def test_no_allow_list_serves_anything_and_bad_lists_are_refused(evm: EvmLab) -> None:
    open_ = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    assert open_.allowed_payments is None
    bad: list[Any] = [
        [],
        [("0x1234", evm.merchant)],
        [(evm.token, "merchant")],
        [(evm.token,)],
        ["0x" + "11" * 20],
    ]
    for pairs in bad:
        with pytest.raises(FacilitatorConfigError):
            local_facilitator(evm.anvil.url, evm.operator, evm.network, allowed_payments=pairs)
    for cap in (0, -1, 1.5, True):
        with pytest.raises(FacilitatorConfigError):
            local_facilitator(evm.anvil.url, evm.operator, evm.network, max_settle_gas=cap)
