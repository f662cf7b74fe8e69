"""Fixtures for x402gw tests: one anvil per session with the EIP-3009 token, reverted after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from lab.anvil import CHAIN_ID, AnvilChain, dev_account, running_chain
from paylab import local_facilitator
from x402 import x402Client
from x402.http.utils import encode_payment_signature_header
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS
from x402.schemas import PaymentRequired as SdkPaymentRequired
from x402.schemas.v1 import PaymentRequiredV1 as SdkPaymentRequiredV1

from x402gw.chain import ChainClient
from x402gw.facilitator import LocalFacilitator
from x402gw.networks import NETWORKS, Asset
from x402gw.wire import (
    AnyPaymentPayload,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    decode_payment_payload,
)

NETWORK = NETWORKS.register(CHAIN_ID, "anvil")
PAYER_FUNDS = 5_000_000  # 5 tokens at 6 decimals


@dataclass
class EvmLab:
    """A running anvil with a deployed token, a funded payer, a merchant and an operator."""

    anvil: AnvilChain
    token: str
    payer: LocalAccount
    merchant: str
    operator: LocalAccount
    network: str = NETWORK

    @property
    def asset(self) -> Asset:
        """The token as a registry asset (EIP-712 name "USD Coin", version "2")."""
        return Asset(self.network, self.token, "USD Coin", "2")

    def balance(self, owner: str) -> int:
        """Token balance read from the node."""
        return self.anvil.balance_of(self.token, owner)


@pytest.fixture(scope="session")
def anvil_session() -> Iterator[tuple[AnvilChain, str]]:
    """Start anvil once, deploy the token, fund the payer, install Multicall3; yields (chain, token)."""
    with running_chain() as chain:
        token = chain.deploy_token("USD Coin", "2", "USDC").address
        chain.mint(token, dev_account(1).address, PAYER_FUNDS)
        chain.install_multicall3()
        yield chain, token


@pytest.fixture
def evm(anvil_session: tuple[AnvilChain, str]) -> Iterator[EvmLab]:
    """The session chain, snapshotted before the test and reverted after it."""
    chain, token = anvil_session
    snap = chain.snapshot()
    try:
        yield EvmLab(
            anvil=chain,
            token=token,
            payer=dev_account(1),
            merchant=Account.create().address,
            operator=dev_account(2),
        )
    finally:
        chain.revert(snap)


@pytest.fixture
async def client(evm: EvmLab) -> AsyncIterator[ChainClient]:
    """A ChainClient on the lab chain, closed after the test."""
    rpc = ChainClient(evm.anvil.url)
    try:
        yield rpc
    finally:
        await rpc.aclose()


def requirements(lab: EvmLab, amount: str = "10000", **changes: object) -> PaymentRequirements:
    """A v2 offer on the lab token, with optional field overrides."""
    base = PaymentRequirements(
        scheme="exact",
        network=lab.network,
        asset=lab.token,
        amount=amount,
        pay_to=lab.merchant,
        max_timeout_seconds=120,
        extra={"name": "USD Coin", "version": "2"},
    )
    return base.model_copy(update=changes)


def requirements_v1(lab: EvmLab, amount: str = "10000") -> PaymentRequirementsV1:
    """The v1 form of :func:`requirements` (legacy name "anvil")."""
    return PaymentRequirementsV1(
        scheme="exact",
        network="anvil",
        max_amount_required=amount,
        resource="http://127.0.0.1/paid",
        pay_to=lab.merchant,
        max_timeout_seconds=120,
        asset=lab.token,
        extra={"name": "USD Coin", "version": "2"},
    )


async def sdk_pay(
    signer: LocalAccount, offer: PaymentRequirements | PaymentRequirementsV1
) -> AnyPaymentPayload:
    """What the official SDK client sends for ``offer``, decoded by our wire layer from its header."""
    client = x402Client()
    client.register("eip155:*", ExactEvmScheme(signer))
    client.register_v1("anvil", ExactEvmSchemeV1(signer))
    client.set_spend_controls(False)
    if isinstance(offer, PaymentRequirementsV1):
        challenge: object = SdkPaymentRequiredV1.model_validate(
            PaymentRequiredV1(accepts=[offer]).to_json_dict()
        )
    else:
        challenge = SdkPaymentRequired.model_validate(
            PaymentRequired(accepts=[offer]).to_json_dict()
        )
    sdk_payload = await client.create_payment_payload(challenge)  # type: ignore[arg-type]
    return decode_payment_payload(encode_payment_signature_header(sdk_payload))


@pytest.fixture
def _sdk_knows_anvil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teach the SDK's v1 client the legacy name of chain 31337, as a v1 deployment would."""
    monkeypatch.setitem(V1_NETWORK_CHAIN_IDS, "anvil", CHAIN_ID)


OfferFactory = Callable[..., PaymentRequirements]
PayFunction = Callable[
    [LocalAccount, PaymentRequirements | PaymentRequirementsV1], Awaitable[AnyPaymentPayload]
]


@pytest.fixture
def offer(evm: EvmLab) -> OfferFactory:
    """``offer(amount="10000", **overrides)``: a v2 requirement on the lab token."""
    return lambda amount="10000", **changes: requirements(evm, amount, **changes)


@pytest.fixture
def offer_v1(evm: EvmLab) -> Callable[..., PaymentRequirementsV1]:
    """``offer_v1(amount="10000")``: the v1 requirement on the lab token."""
    return lambda amount="10000": requirements_v1(evm, amount)


@pytest.fixture
def pay(_sdk_knows_anvil: None) -> PayFunction:
    """``await pay(account, offer)``: the official SDK client's payment, as our wire model."""
    return sdk_pay


@pytest.fixture
async def local(evm: EvmLab) -> AsyncIterator[LocalFacilitator]:
    """A LocalFacilitator on the lab chain, closed after the test."""
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    try:
        yield facilitator
    finally:
        await facilitator.aclose()
