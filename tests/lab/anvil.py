"""The test labs' local EVM: anvil with our EIP-3009 token, from :mod:`x402gw.devchain`.

Start one per session; use :meth:`AnvilChain.snapshot` / :meth:`AnvilChain.revert` to isolate tests.
``bavlio dev`` (:mod:`server.devstack`) runs on the same module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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


@contextmanager
def running_chain() -> Iterator[AnvilChain]:
    """A started :class:`AnvilChain`, stopped afterwards; the test fails (no traceback) when
    anvil cannot start, since a lab test must not pass or skip without its chain."""
    chain = AnvilChain()
    try:
        chain.start()
    except DevChainError as exc:
        pytest.fail(f"anvil unavailable: {exc}", pytrace=False)
    try:
        yield chain
    finally:
        chain.stop()
