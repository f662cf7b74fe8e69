"""x402gw.devchain, the local chain ``bavlio dev`` and the labs share: finding anvil, building
contracts, and its errors (typed, under X402Error)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from x402gw import X402Error, devchain
from x402gw.devchain import AnvilChain, DevChainError, anvil_binary, artefact

if TYPE_CHECKING:
    from conftest import EvmLab


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 3\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_error_is_in_the_tree_and_a_runtime_error() -> None:
    assert issubclass(DevChainError, X402Error)
    assert issubclass(DevChainError, RuntimeError)


def test_anvil_is_found_native_first_then_the_npm_wrapper(tmp_path: Path) -> None:
    wrapper = _executable(tmp_path / "node_modules" / ".bin" / "anvil")
    assert anvil_binary(tmp_path) == wrapper
    native = _executable(
        tmp_path / "node_modules" / "@foundry-rs" / "anvil-linux-x64" / "bin" / "anvil"
    )
    assert anvil_binary(tmp_path) == native


def test_anvil_missing_everywhere_is_a_dev_chain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevChainError, match="anvil missing"):
        anvil_binary(tmp_path)
    _executable(tmp_path / "bin" / "anvil")
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty'}{os.pathsep}{tmp_path / 'bin'}")
    assert anvil_binary(tmp_path) == tmp_path / "bin" / "anvil"


def test_anvil_exiting_at_start_is_a_dev_chain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devchain, "anvil_binary", lambda: _executable(tmp_path / "anvil"))
    chain = AnvilChain()
    with pytest.raises(DevChainError, match="anvil exited with 3"):
        chain.start()
    chain.stop()  # nothing left running: stopping is safe


def test_contracts_without_node_are_a_dev_chain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devchain, "BUILD", tmp_path / "build")  # nothing built there
    monkeypatch.setattr(devchain.shutil, "which", lambda _name: None)
    with pytest.raises(DevChainError, match="node is required"):
        artefact("EIP3009Token")


def test_node_refusals_are_dev_chain_errors(evm: EvmLab) -> None:
    with pytest.raises(DevChainError, match="no_such_method"):
        evm.anvil.rpc("no_such_method")
    with pytest.raises(DevChainError, match="evm_revert"):
        evm.anvil.revert("0x999")
    # an ERC-20 transfer to the zero address reverts: the mined transaction failed
    with pytest.raises(DevChainError, match=r"^transaction 0x[0-9a-f]{64} failed"):
        evm.anvil.transact(evm.payer, evm.token, bytes.fromhex("a9059cbb") + bytes(64))
    assert evm.anvil.balance_of(evm.token, evm.payer.address) == 5_000_000
