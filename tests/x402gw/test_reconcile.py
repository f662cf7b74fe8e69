"""reconcile_ledger on anvil: a record is settled only by a successful transaction carrying its
own Transfer (asset, payer -> payTo, amount), never merely because its nonce is used."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak
from paylab import PRICE, local_facilitator
from selfsign import signed_payment

from x402gw import exact_evm as ev
from x402gw.chain import transfer_calldata
from x402gw.facilitator import LocalFacilitator, reconcile_ledger
from x402gw.ledger import Ledger, NonceUse, PaymentRecord, State, TxOutcome
from x402gw.ledger.rules import Event, ReconcileDecision, decide_reconcile
from x402gw.wire import PaymentPayload, PaymentRequirements

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory


async def settling(
    ledger: Ledger,
    evm: EvmLab,
    payload: PaymentPayload,
    requirements: PaymentRequirements,
    tx_hash: str | None = None,
) -> PaymentRecord:
    """A record for ``payload`` left in `settling` (a crash before the outcome was written)."""
    auth = payload.payload["authorization"]
    record = await ledger.reserve(
        scheme="exact",
        network=evm.network,
        asset=evm.token,
        payer=auth["from"],
        pay_to=requirements.pay_to,
        amount=int(requirements.amount),
        nonce=auth["nonce"],
        valid_before=int(auth["validBefore"]),
        resource="GET /paid",
        fingerprint="0" * 64,
    )
    return await ledger.mark_settling(record.id, tx_hash)


def same_nonce_elsewhere(
    evm: EvmLab, payload: PaymentPayload, requirements: PaymentRequirements
) -> tuple[PaymentPayload, PaymentRequirements, str]:
    """Another authorization by the same payer with the same nonce: 1 unit to someone else."""
    stranger = Account.create().address
    other = requirements.model_copy(update={"pay_to": stranger, "amount": "1"})
    nonce = bytes.fromhex(payload.payload["authorization"]["nonce"][2:])
    return signed_payment(evm.payer, other, nonce=nonce), other, stranger


def candidate(payload: PaymentPayload, requirements: PaymentRequirements) -> ev.Candidate:
    found = ev.check_offchain(payload, requirements, now=int(time.time()))
    assert isinstance(found, ev.Candidate), found
    return found


async def test_a_nonce_used_by_another_authorization_fails_the_record(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    theirs, their_offer, stranger = same_nonce_elsewhere(evm, ours, requirements)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements)  # crashed before broadcast
        mined = await local.settle(theirs, their_offer)  # the payer's other payment lands first
        assert mined.success, mined
        summary = await reconcile_ledger(ledger, local.client)
        done = await ledger.get(record.id)
    assert summary.failed == [record.id]
    assert summary.settled == []
    assert done.state is State.FAILED
    assert done.error == "reconcile: authorization used without paying this record"
    assert done.tx_hash is None
    assert evm.balance(stranger) == 1
    assert evm.balance(evm.merchant) == 0


async def test_our_reverted_transaction_and_a_nonce_taken_elsewhere_fail_the_record(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    theirs, their_offer, _ = same_nonce_elsewhere(evm, ours, requirements)
    assert (await local.settle(theirs, their_offer)).success
    # Our own broadcast, made blind (no estimate) after theirs: it reverts on chain.
    reverted = evm.anvil.rpc(
        "eth_sendTransaction",
        {
            "from": evm.operator.address,
            "to": evm.token,
            "gas": hex(200_000),
            "data": "0x" + transfer_calldata(candidate(ours, requirements)).hex(),
        },
    )
    assert evm.anvil.rpc("eth_getTransactionReceipt", reverted)["status"] == "0x0"
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements, reverted)
        summary = await reconcile_ledger(ledger, local.client)
        done = await ledger.get(record.id)
    assert summary.failed == [record.id]
    assert done.state is State.FAILED
    assert done.tx_hash == reverted


async def test_a_cancelled_authorization_fails_the_record(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    found = candidate(ours, requirements)
    nonce = found.authorization.nonce
    struct = keccak(
        abi_encode(
            ["bytes32", "address", "bytes32"],
            [
                keccak(text="CancelAuthorization(address authorizer,bytes32 nonce)"),
                evm.payer.address,
                nonce,
            ],
        )
    )
    signed = Account.unsafe_sign_hash(
        keccak(b"\x19\x01" + ev.domain_separator(found.domain) + struct), evm.payer.key
    )
    cancel = keccak(text="cancelAuthorization(address,bytes32,bytes)")[:4] + abi_encode(
        ["address", "bytes32", "bytes"], [evm.payer.address, nonce, bytes(signed.signature)]
    )
    evm.anvil.transact(evm.payer, evm.token, cancel)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements)
        summary = await reconcile_ledger(ledger, local.client)
    assert summary.failed == [record.id]


async def test_our_authorization_submitted_by_someone_else_settles_with_its_hash(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements)  # crashed before broadcast
        elsewhere = local_facilitator(evm.anvil.url, Account.create(), evm.network)
        evm.anvil.set_eth_balance(elsewhere.settler.address, 10**18)
        try:
            front_run = await elsewhere.settle(ours, requirements)
        finally:
            await elsewhere.aclose()
        assert front_run.success, front_run
        blocks = int(evm.anvil.rpc("eth_blockNumber"), 16)
        summary = await reconcile_ledger(ledger, local.client)
        done = await ledger.get(record.id)
    assert summary.settled == [record.id]
    assert (done.state, done.tx_hash) == (State.SETTLED, front_run.transaction)
    assert evm.balance(evm.merchant) == PRICE
    assert int(evm.anvil.rpc("eth_blockNumber"), 16) == blocks  # reconcile sends nothing


async def test_a_used_nonce_whose_log_is_out_of_reach_stays_pending_with_an_error(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements)
        assert (await local.settle(ours, requirements)).success
        evm.anvil.rpc("anvil_mine", "0x5")
        summary = await reconcile_ledger(ledger, local.client, lookback_blocks=2)
        assert (await ledger.get(record.id)).state is State.SETTLING
        assert "no AuthorizationUsed or AuthorizationCanceled log" in summary.errors[record.id]
        again = await reconcile_ledger(ledger, local.client)  # the default window reaches it
    assert again.settled == [record.id]


async def test_a_stored_hash_without_our_transfer_does_not_settle(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, tmp_path: Path
) -> None:
    """The stored hash names a successful transaction that is not this payment (here: the
    payer's other authorization with the same nonce): the record fails."""
    requirements = offer()
    ours = signed_payment(evm.payer, requirements)
    theirs, their_offer, _ = same_nonce_elsewhere(evm, ours, requirements)
    mined = await local.settle(theirs, their_offer)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        record = await settling(ledger, evm, ours, requirements, mined.transaction)
        summary = await reconcile_ledger(ledger, local.client)
    assert summary.failed == [record.id]


@pytest.mark.parametrize("has_hash", [True, False])
@pytest.mark.parametrize("expired", [True, False])
@pytest.mark.parametrize("outcome", [None, *TxOutcome])
@pytest.mark.parametrize("use", list(NonceUse))
def test_the_decision_with_a_nonce_use(
    has_hash: bool, expired: bool, outcome: TxOutcome | None, use: NonceUse
) -> None:
    outcome = outcome if has_hash else None
    decision = decide_reconcile(
        has_tx_hash=has_hash, outcome=outcome, authorization_used=use, expired=expired
    )
    mined = outcome is TxOutcome.MINED_OK
    if mined or use is NonceUse.PAID:
        assert decision.event is Event.SETTLED
    elif use is NonceUse.OTHER:
        assert decision == ReconcileDecision(
            Event.FAIL, "authorization used without paying this record"
        )
    elif outcome is TxOutcome.REVERTED or expired:
        assert decision.event is Event.FAIL
    else:
        assert decision.event is None
