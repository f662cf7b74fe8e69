"""A local EVM for development and tests: anvil (npm ``@foundry-rs/anvil``) on 127.0.0.1 with the
repository's EIP-3009 token and contract wallets (``contracts/``), driven over JSON-RPC.

Shared by ``bavlio dev`` (:mod:`server.devstack`) and the test labs (``tests/lab/anvil.py``); it
imports nothing from either. Synchronous on purpose: it sets a chain up, it is not the payment path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from x402gw.chain import MULTICALL3
from x402gw.errors import X402Error

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
]


def _root() -> Path:
    """The checkout holding contracts/ and node_modules/: this package's parent, else the cwd."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "contracts").is_dir() else Path.cwd()


ROOT = _root()
CONTRACTS = ROOT / "contracts"
BUILD = CONTRACTS / "build"
CHAIN_ID = 31337
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default dev keys


class DevChainError(X402Error, RuntimeError):
    """The dev chain cannot run: anvil or node missing, contract build failed, anvil not ready,
    or the node refused a call or a transaction."""


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(CONTRACTS.glob("*.sol")):
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def artefact(name: str) -> dict[str, Any]:
    """ABI and bytecode of ``contracts/*.sol`` contract ``name``, compiling with solc when stale."""
    path = BUILD / f"{name}.json"
    wanted = _source_hash()
    if not path.exists() or json.loads(path.read_text())["sourceHash"] != wanted:
        node = shutil.which("node")
        if node is None:
            raise DevChainError("node is required to compile contracts (npm solc)")
        done = subprocess.run(
            [node, str(CONTRACTS / "build.mjs")], cwd=ROOT, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise DevChainError(f"contract build failed: {done.stderr.decode()[-500:]}")
    data: dict[str, Any] = json.loads(path.read_text())
    if data["sourceHash"] != wanted:
        raise DevChainError(f"{path} is stale after compiling")
    return data


def dev_account(index: int) -> LocalAccount:
    """Anvil's funded dev account ``index`` (derived from the well-known test mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def anvil_binary(root: Path = ROOT) -> Path:
    """anvil from npm ``@foundry-rs/anvil`` (the native platform binary when present), or PATH."""
    modules = root / "node_modules"
    for native in sorted(modules.glob("@foundry-rs/anvil-*/bin/anvil")):
        return native
    wrapper = modules / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise DevChainError("anvil missing: run `npm ci` at the repository root")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployed:
    """A deployed contract: its address and ABI."""

    address: str
    abi: list[dict[str, Any]]


class AnvilChain:
    """Runs anvil on 127.0.0.1 (chain 31337), deploys contracts and drives it over JSON-RPC."""

    def __init__(self, *, own_session: bool = False) -> None:
        """``own_session`` keeps a terminal's Ctrl-C from reaching anvil (we stop it ourselves)."""
        self.own_session = own_session
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=10.0)
        self._id = 0
        self.deployer = dev_account(0)

    # ---- process -------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Spawn anvil and wait until it answers ``eth_chainId``."""
        binary = anvil_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--chain-id",
                str(CHAIN_ID),
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise DevChainError(f"anvil exited with {self._proc.returncode}: {err}")
            try:
                if int(self.rpc("eth_chainId"), 16) == CHAIN_ID:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise DevChainError("anvil did not become ready")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The anvil process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Terminate anvil (kill if it lingers) and close the HTTP client."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._http.close()

    # ---- JSON-RPC ------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; raises :class:`DevChainError` with the node's error."""
        self._id += 1
        reply = self._http.post(
            self.url,
            json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)},
        ).json()
        if "error" in reply:
            raise DevChainError(f"{method}: {reply['error']}")
        return reply["result"]

    def snapshot(self) -> str:
        """Snapshot the chain state (``evm_snapshot``)."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Return to a snapshot (``evm_revert``); the snapshot is consumed."""
        if not self.rpc("evm_revert", snapshot_id):
            raise DevChainError(f"evm_revert({snapshot_id}) failed")

    def transact(
        self, sender: LocalAccount, to: str | None, data: bytes, value: int = 0
    ) -> dict[str, Any]:
        """Sign, send and mine a transaction; returns the receipt (raises if it reverted)."""
        nonce = int(self.rpc("eth_getTransactionCount", sender.address, "pending"), 16)
        tx: dict[str, Any] = {
            "nonce": nonce,
            "gas": 5_000_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": CHAIN_ID,
            "value": value,
            "data": data,
            "type": 2,
        }
        if to is not None:
            tx["to"] = to_checksum_address(to)
        raw = sender.sign_transaction(tx).raw_transaction
        tx_hash = self.rpc("eth_sendRawTransaction", "0x" + bytes(raw).hex())
        receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
        deadline = time.monotonic() + 10
        while receipt is None and time.monotonic() < deadline:
            time.sleep(0.01)
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
        if receipt is None or int(receipt["status"], 16) != 1:
            raise DevChainError(f"transaction {tx_hash} failed: {receipt}")
        return dict(receipt)

    def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at latest."""
        return bytes.fromhex(
            self.rpc("eth_call", {"to": to, "data": "0x" + data.hex()}, "latest")[2:]
        )

    # ---- contracts -----------------------------------------------------------------------

    def deploy(self, name: str, types: list[str], args: list[Any]) -> Deployed:
        """Deploy contract ``name`` with constructor ``args`` from the deployer account."""
        art = artefact(name)
        data = bytes.fromhex(art["bytecode"][2:]) + encode(types, args)
        receipt = self.transact(self.deployer, None, data)
        return Deployed(address=to_checksum_address(receipt["contractAddress"]), abi=art["abi"])

    def deploy_token(
        self, name: str = "USD Coin", version: str = "2", symbol: str = "USDC"
    ) -> Deployed:
        """Deploy the EIP-3009 test token with the given EIP-712 name and version."""
        return self.deploy("EIP3009Token", ["string", "string", "string"], [name, version, symbol])

    def mint(self, token: str, to: str, amount: int) -> None:
        """Mint test tokens (the deployer is the token owner)."""
        data = keccak(text="mint(address,uint256)")[:4] + encode(
            ["address", "uint256"], [to, amount]
        )
        self.transact(self.deployer, token, data)

    def balance_of(self, token: str, owner: str) -> int:
        """ERC-20 balance straight from the node."""
        out = self.call(token, keccak(text="balanceOf(address)")[:4] + encode(["address"], [owner]))
        return int.from_bytes(out, "big")

    def set_eth_balance(self, address: str, wei: int) -> None:
        """Give an address native ETH for gas (``anvil_setBalance``)."""
        self.rpc("anvil_setBalance", address, hex(wei))

    def install_multicall3(self) -> str:
        """Put Multicall3Lite's runtime code at the canonical Multicall3 address (as on real chains)."""
        helper = self.deploy("Multicall3Lite", [], [])
        self.rpc("anvil_setCode", MULTICALL3, self.rpc("eth_getCode", helper.address, "latest"))
        return MULTICALL3
