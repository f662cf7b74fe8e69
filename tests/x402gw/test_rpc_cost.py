"""What an unpaid request costs in JSON-RPC: counted by a relay in front of anvil.

A plain 65-byte signature that does not recover to ``from`` is refused offline (x402gw's policy:
contract wallets sign otherwise, e.g. ERC-6492 wrapped); a contract payer's code and the asset's
code are asked once, not on every verify.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from eth_account import Account
from paylab import PRICE, local_facilitator
from rpclab import RpcRelay
from selfsign import signed_payment

from x402gw import exact_evm as ev
from x402gw.facilitator import LocalFacilitator

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction


@asynccontextmanager
async def counted(evm: EvmLab) -> AsyncIterator[tuple[LocalFacilitator, RpcRelay]]:
    """A LocalFacilitator whose every JSON-RPC request goes through a counting relay."""
    async with RpcRelay(evm.anvil.url) as relay:
        facilitator = local_facilitator(relay.url(), evm.operator, evm.network)
        try:
            yield facilitator, relay
        finally:
            await facilitator.aclose()


def garbage_signature() -> str:
    """65 random bytes with a valid v: recovers to some random key, or to nothing."""
    return "0x" + os.urandom(64).hex() + "1b"


@pytest.mark.parametrize("kind", ["random_bytes", "another_key", "high_s"])
async def test_a_signature_not_from_the_payer_costs_no_rpc_call(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, kind: str
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    if kind == "random_bytes":
        payload.payload["signature"] = garbage_signature()
    elif kind == "another_key":
        payload = signed_payment(Account.create(), requirements, from_address=evm.payer.address)
    else:
        sig = bytes.fromhex(payload.payload["signature"][2:])
        payload.payload["signature"] = "0x" + (sig[:32] + b"\xff" * 32 + sig[64:]).hex()
    async with counted(evm) as (facilitator, relay):
        verified = await facilitator.verify(payload, requirements)
        settled = await facilitator.settle(payload, requirements)
    assert (verified.is_valid, verified.invalid_reason) == (False, ev.INVALID_SIGNATURE)
    assert (settled.success, settled.error_reason) == (False, ev.INVALID_SIGNATURE)
    assert verified.payer == evm.payer.address
    assert relay.methods == []
    assert relay.requests == 0


async def test_a_contract_payer_with_a_foreign_ecdsa_signature_costs_no_rpc_call(
    evm: EvmLab, offer: OfferFactory
) -> None:
    """The wallet's owner signs a plain ECDSA signature: it recovers to the owner, not to the
    wallet, so it is refused before the chain is asked (the SDK would ask EIP-1271)."""
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    requirements = offer()
    payload = signed_payment(evm.payer, requirements, from_address=wallet)
    async with counted(evm) as (facilitator, relay):
        verified = await facilitator.verify(payload, requirements)
        settled = await facilitator.settle(payload, requirements)
    assert verified.invalid_reason == ev.INVALID_SIGNATURE
    assert settled.error_reason == ev.INVALID_SIGNATURE
    assert relay.requests == 0
    assert evm.balance(evm.merchant) == 0


async def test_a_contract_wallet_pays_with_a_wrapped_signature_and_its_code_is_asked_once(
    evm: EvmLab, offer: OfferFactory
) -> None:
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    requirements = offer()
    payload = signed_payment(evm.payer, requirements, from_address=wallet, erc6492=True)
    async with counted(evm) as (facilitator, relay):
        first = await facilitator.verify(payload, requirements)
        assert first.is_valid, first
        assert relay.methods.count("eth_getCode") == 2  # the wallet's and the token's
        relay.reset()
        again = await facilitator.verify(payload, requirements)
        assert again.is_valid, again
        assert "eth_getCode" not in relay.methods  # both remembered
        assert relay.requests == 2  # EIP-1271, then the simulation
        settled = await facilitator.settle(payload, requirements)
    assert settled.success, settled
    assert evm.balance(evm.merchant) == PRICE
    assert evm.balance(wallet) == 50_000 - PRICE


async def test_a_contract_payers_code_is_asked_again_after_the_ttl(
    evm: EvmLab, offer: OfferFactory
) -> None:
    wallet = evm.anvil.deploy("EIP1271Wallet", ["address"], [evm.payer.address]).address
    evm.anvil.mint(evm.token, wallet, 50_000)
    requirements = offer()
    payload = signed_payment(evm.payer, requirements, from_address=wallet, erc6492=True)
    now = [float(int(payload.payload["authorization"]["validBefore"]) - 290)]
    async with RpcRelay(evm.anvil.url) as relay:
        facilitator = local_facilitator(
            relay.url(), evm.operator, evm.network, clock=lambda: now[0]
        )
        try:
            assert (await facilitator.verify(payload, requirements)).is_valid
            relay.reset()
            now[0] += 1
            assert (await facilitator.verify(payload, requirements)).is_valid
            assert "eth_getCode" not in relay.methods
            relay.reset()
            now[0] += 250  # past the payer-code TTL, still inside validBefore
            assert (await facilitator.verify(payload, requirements)).is_valid
            assert relay.methods.count("eth_getCode") == 1  # the payer's; the asset stays known
        finally:
            await facilitator.aclose()


async def test_an_eoa_payment_costs_one_request_and_the_asset_is_asked_once(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    async with counted(evm) as (facilitator, relay):
        assert (await facilitator.verify(await pay(evm.payer, requirements), requirements)).is_valid
        assert relay.requests == 1
        assert sorted(relay.methods) == ["eth_call", "eth_getCode", "eth_getCode"]
        relay.reset()
        assert (await facilitator.verify(await pay(evm.payer, requirements), requirements)).is_valid
        assert sorted(relay.methods) == ["eth_call", "eth_getCode"]  # the payer's code only
