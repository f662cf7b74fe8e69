"""x402gw's public API: lazily re-exported, so importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import x402gw


def test_import_loads_no_chain_or_database_stack() -> None:
    code = (
        "import sys, x402gw; "
        "print(sorted(m for m in ('web3', 'eth_account', 'sqlalchemy', 'aiohttp', 'httpx', "
        "'coincurve', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_every_exported_name_resolves() -> None:
    for name in x402gw.__all__:
        assert getattr(x402gw, name) is not None, name
    from x402gw import ledger

    assert x402gw.Ledger is ledger.Ledger
    assert x402gw.LedgerError is ledger.LedgerError
    assert issubclass(x402gw.NotBroadcast, x402gw.X402Error)


def test_one_exception_tree() -> None:
    """Every error x402gw raises on purpose is an X402Error (ledger and locks included)."""
    from x402gw.locks import LockUnavailable

    for error in (x402gw.LedgerError, LockUnavailable, x402gw.FacilitatorError):
        assert issubclass(error, x402gw.X402Error), error


@pytest.mark.parametrize("module", ["x402gw.locks", "x402gw.ledger.rules", "x402gw.ledger"])
def test_the_ledger_imports_in_any_order_without_a_database_stack(module: str) -> None:
    """The locks and the ledger import each other's parts; either may come first. A ledger
    module loads SQLAlchemy only when a SQL ledger is made (the in-memory store never does)."""
    code = (
        f"import sys, {module}; from x402gw.ledger import Ledger, MemoryStore; "
        "Ledger(MemoryStore()); print('sqlalchemy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        x402gw.NoSuchThing  # noqa: B018
