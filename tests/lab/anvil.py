"""The test labs' local EVM: anvil with our EIP-3009 token, from :mod:`x402gw.devchain`.

Start one per session; use :meth:`AnvilChain.snapshot` / :meth:`AnvilChain.revert` to isolate tests.
``bavlio dev`` (:mod:`server.devstack`) runs on the same module.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from x402gw.devchain import (
    BUILD,
    CHAIN_ID,
    CONTRACTS,
    MNEMONIC,
    ROOT,
    AnvilChain,
    Deployed,
    DevChainError,
    anvil_binary,
    artefact,
    dev_account,
    free_port,
)

from ._service import started

__all__ = [
    "BUILD",
    "CHAIN_ID",
    "CONTRACTS",
    "MNEMONIC",
    "ROOT",
    "AnvilChain",
    "Deployed",
    "DevChainError",
    "anvil_binary",
    "artefact",
    "dev_account",
    "free_port",
    "running_chain",
]


def running_chain() -> AbstractContextManager[AnvilChain]:
    """A started :class:`AnvilChain`, stopped afterwards; the test fails (no traceback) when
    anvil cannot start, since a lab test must not pass or skip without its chain."""
    return started(AnvilChain(), DevChainError, "anvil")
