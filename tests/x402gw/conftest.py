"""Fixtures for x402gw tests: one anvil per session with the EIP-3009 token, reverted after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from lab.anvil import CHAIN_ID, AnvilChain, dev_account

from x402gw.chain import ChainClient
from x402gw.networks import NETWORKS, Asset

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
    """Start anvil once, deploy the token and fund the payer; yields (chain, token address)."""
    chain = AnvilChain()
    try:
        chain.start()
    except RuntimeError as exc:
        pytest.fail(f"anvil unavailable: {exc}", pytrace=False)
    try:
        token = chain.deploy_token("USD Coin", "2", "USDC").address
        chain.mint(token, dev_account(1).address, PAYER_FUNDS)
        yield chain, token
    finally:
        chain.stop()


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
