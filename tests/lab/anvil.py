"""A real local EVM for tests: anvil (from npm @foundry-rs/anvil) plus our EIP-3009 token.

Start one per session; use :meth:`AnvilChain.snapshot` / :meth:`AnvilChain.revert` to isolate tests.
The implementation lives in :mod:`server.devstack`, which ``bavlio dev`` runs on too.
"""

from __future__ import annotations

from server.devstack import (
    BUILD,
    CHAIN_ID,
    CONTRACTS,
    MNEMONIC,
    MULTICALL3,
    ROOT,
    AnvilChain,
    Deployed,
    anvil_binary,
    artefact,
    dev_account,
    free_port,
)

__all__ = [
    "BUILD",
    "CHAIN_ID",
    "CONTRACTS",
    "MNEMONIC",
    "MULTICALL3",
    "ROOT",
    "AnvilChain",
    "Deployed",
    "anvil_binary",
    "artefact",
    "dev_account",
    "free_port",
]
