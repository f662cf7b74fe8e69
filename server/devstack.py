"""``bavlio dev``: a local chain (anvil) with our EIP-3009 token, a funded demo wallet, and the
server with payments settling on that chain, all on 127.0.0.1 and stopped together.

The anvil and contract helpers are also the test labs' chain (``tests/lab/anvil.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

__all__ = [
    "CHAIN_ID",
    "DEMO_FUNDS",
    "AnvilChain",
    "DevStack",
    "DevStackError",
    "anvil_binary",
    "artefact",
    "dev_account",
    "run_dev",
]


def _root() -> Path:
    """The checkout holding contracts/ and node_modules/: this package's parent, else the cwd."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "contracts").is_dir() else Path.cwd()


ROOT = _root()
CONTRACTS = ROOT / "contracts"
BUILD = CONTRACTS / "build"
CHAIN_ID = 31337
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default dev keys
DEMO_FUNDS = 100_000_000  # 100 tokens at 6 decimals
DEFAULT_PORT = 8402
CHECK_PATH = "/api/x402/v1/prospects/search"
CHECK_BODY = {"tags": ["demo"]}


class DevStackError(RuntimeError):
    """The local stack cannot start (anvil or node missing, port taken, contract build failed)."""


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
            raise DevStackError("node is required to compile contracts (npm solc)")
        done = subprocess.run(
            [node, str(CONTRACTS / "build.mjs")], cwd=ROOT, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise DevStackError(f"contract build failed: {done.stderr.decode()[-500:]}")
    data: dict[str, Any] = json.loads(path.read_text())
    if data["sourceHash"] != wanted:
        raise DevStackError(f"{path} is stale after compiling")
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
    raise DevStackError("anvil missing: run `npm ci` at the repository root")


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
        try:
            binary = anvil_binary()
        except DevStackError as exc:
            raise RuntimeError(str(exc)) from None
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
                raise RuntimeError(f"anvil exited with {self._proc.returncode}: {err}")
            try:
                if int(self.rpc("eth_chainId"), 16) == CHAIN_ID:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("anvil did not become ready")
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
        """One JSON-RPC call; raises RuntimeError with the node's error."""
        self._id += 1
        reply = self._http.post(
            self.url,
            json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)},
        ).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def snapshot(self) -> str:
        """Snapshot the chain state (``evm_snapshot``)."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Return to a snapshot (``evm_revert``); the snapshot is consumed."""
        if not self.rpc("evm_revert", snapshot_id):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")

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
            raise RuntimeError(f"transaction {tx_hash} failed: {receipt}")
        return dict(receipt)

    def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at latest."""
        return bytes.fromhex(
            self.rpc("eth_call", {"to": to, "data": "0x" + data.hex()}, "latest")[2:]
        )

    # ---- contracts -----------------------------------------------------------------------

    def deploy(self, name: str, types: list[str], args: list[Any]) -> Deployed:
        """Deploy contract ``name`` with constructor ``args`` from the deployer account."""
        from eth_abi.abi import encode

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
        from eth_abi.abi import encode
        from eth_utils.crypto import keccak

        data = keccak(text="mint(address,uint256)")[:4] + encode(
            ["address", "uint256"], [to, amount]
        )
        self.transact(self.deployer, token, data)

    def balance_of(self, token: str, owner: str) -> int:
        """ERC-20 balance straight from the node."""
        from eth_abi.abi import encode
        from eth_utils.crypto import keccak

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


# ---- the dev stack ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DevStack:
    """What ``bavlio dev`` set up: chain, token, wallets, and where the server listens."""

    rpc_url: str
    token: str
    payer: LocalAccount
    settler: LocalAccount
    merchant: str
    url: str
    state_dir: Path

    @property
    def payer_key(self) -> str:
        """The demo payer's private key, hex (a public anvil dev key: test funds only)."""
        return "0x" + bytes(self.payer.key).hex()

    def environment(self) -> dict[str, str]:
        """The ``BAVLIO_*`` settings of the dev server (and the payer key for ``bavlio pay``)."""
        return {
            "BAVLIO_DATABASE_URL": f"sqlite+aiosqlite:///{self.state_dir / 'bavlio.sqlite3'}",
            "BAVLIO_RPC_URL": self.rpc_url,
            "BAVLIO_NETWORK": f"eip155:{CHAIN_ID}",
            "BAVLIO_ASSET": self.token,
            "BAVLIO_ASSET_NAME": "USD Coin",
            "BAVLIO_ASSET_VERSION": "2",
            "BAVLIO_PAY_TO": self.merchant,
            "BAVLIO_SETTLER_KEY": "0x" + bytes(self.settler.key).hex(),
            "BAVLIO_PAYER_KEY": self.payer_key,
        }

    def pay_command(self) -> str:
        """One shell command that pays for a validate call (runnable without an activated venv)."""
        return (
            f"BAVLIO_PAYER_KEY={self.payer_key} {_bavlio_program()} pay POST "
            f"{self.url}/api/x402/v1/email/validate "
            '\'{"email": "jane@example.com"}\''
        )


def _bavlio_program() -> str:
    """``bavlio`` if that name on PATH is this installation's script, else the script's full path."""
    ours = Path(sys.executable).with_name("bavlio")
    found = shutil.which("bavlio")
    if not ours.exists() or (found is not None and Path(found).resolve() == ours.resolve()):
        return "bavlio"
    return shlex.quote(str(ours))


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@contextmanager
def _chain() -> Iterator[AnvilChain]:
    chain = AnvilChain(own_session=True)  # stopped after the server, not by the terminal's Ctrl-C
    try:
        chain.start()
    except RuntimeError as exc:
        raise DevStackError(str(exc)) from None
    try:
        yield chain
    finally:
        chain.stop()


def _prepare(chain: AnvilChain, port: int, state_dir: Path) -> DevStack:
    token = chain.deploy_token("USD Coin", "2", "USDC").address
    payer, settler, merchant = dev_account(1), dev_account(2), dev_account(3).address
    chain.mint(token, payer.address, DEMO_FUNDS)
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in state_dir.glob("bavlio.sqlite3*"):  # a fresh chain: old ledger rows mean nothing
        stale.unlink()
    stack = DevStack(
        chain.url, token, payer, settler, merchant, f"http://127.0.0.1:{port}", state_dir
    )
    lines = [f"{k}={shlex.quote(v)}" for k, v in stack.environment().items()]
    env_file = state_dir / "env"
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)
    return stack


def _banner(stack: DevStack, out: TextIO, *, smtp: bool = True) -> None:
    if not smtp:
        from server.services import SMTP_ROUTES_LEFT_OUT

        print(f"bavlio dev: {SMTP_ROUTES_LEFT_OUT}", file=out, flush=True)
    print(
        f"bavlio dev: anvil {stack.rpc_url} (chain {CHAIN_ID}), token {stack.token}\n"
        f"  demo payer   {stack.payer.address} funded with {DEMO_FUNDS // 10**6} USDC "
        f"(anvil dev account 1)\n"
        f"  merchant     {stack.merchant}\n"
        f"  server       {stack.url}  (OpenAPI: {stack.url}/openapi.json)\n"
        f"  settings     {stack.state_dir / 'env'}\n"
        f"Pay for a call:\n  {stack.pay_command()}\n"
        "Ctrl-C stops everything.",
        file=out,
        flush=True,
    )


async def _serve(stack: DevStack, port: int, check: bool, out: TextIO) -> int:
    import uvicorn

    from server.app import create_app
    from server.payments import gate_factory
    from server.services import configured_prober
    from server.settings import load_settings

    env = stack.environment()
    env.pop("BAVLIO_PAYER_KEY")
    overrides: dict[str, str | None] = {
        k.removeprefix("BAVLIO_").lower(): v for k, v in env.items()
    }
    overrides.update(facilitator_url=None, database_schema=None)  # whatever the shell exports
    settings = load_settings(None, env_file=None, host="127.0.0.1", port=port, **overrides)
    prober = configured_prober()
    app = create_app(
        settings,
        payment_middleware=gate_factory(settings),
        prober=prober,
        smtp_routes=prober is not None,
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise DevStackError("the server did not start")
        await asyncio.sleep(0.02)
    _banner(stack, out, smtp=prober is not None)
    if not check:
        await task
        return 0
    try:
        return await _self_test(stack, out)
    finally:
        server.should_exit = True
        await task


async def _self_test(stack: DevStack, out: TextIO) -> int:
    from server.payclient import PayError, pay, receipt

    url = stack.url + CHECK_PATH
    try:
        paid = await pay("POST", url, json.dumps(CHECK_BODY).encode(), stack.payer_key)
    except PayError as exc:
        print(f"bavlio dev --check: {exc}", file=sys.stderr)
        return 1
    print(f"POST {url} -> {paid.status}", file=out)
    print(json.dumps(receipt(paid)), file=out, flush=True)
    return 0 if paid.status == 200 and paid.settlement and paid.settlement.success else 1


def run_dev(
    *,
    port: int = DEFAULT_PORT,
    state_dir: Path = Path(".bavlio-dev"),
    check: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Start anvil, deploy and fund, serve until Ctrl-C/SIGTERM (or one paid call with ``check``)."""
    if not _port_free("127.0.0.1", port):
        raise DevStackError(f"port {port} on 127.0.0.1 is taken (choose another with --port)")
    # SIGTERM ends the server like Ctrl-C: uvicorn installs handlers for both while it serves;
    # before that, turn SIGTERM into KeyboardInterrupt so anvil is still stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # even if inherited ignored
    try:
        with _chain() as chain:
            stack = _prepare(chain, port, state_dir.resolve())
            return asyncio.run(_serve(stack, port, check, out))
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
