"""``bavlio dev``: a local chain (anvil) with our EIP-3009 token, a funded demo wallet, and the
server with payments settling on that chain, all on 127.0.0.1 and stopped together; plus a demo
keyed-API user with a key and credits and a small prospect pool (:mod:`server.devseed`).

The chain itself (anvil, contracts, dev accounts) is :mod:`x402gw.devchain`, which the test labs
use too.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from eth_account.signers.local import LocalAccount

from server.devseed import DEMO_TAG, KEYED_EXAMPLE_BODY, KEYED_EXAMPLE_PATH, DemoAccount
from x402gw.devchain import CHAIN_ID, AnvilChain, DevChainError, dev_account

__all__ = [
    "DEMO_FUNDS",
    "DevStack",
    "DevStackError",
    "run_dev",
]


DEMO_FUNDS = 100_000_000  # 100 tokens at 6 decimals
DEFAULT_PORT = 8402
CHECK_PATH = "/api/x402/v1/prospects/search"
CHECK_BODY = {"tags": [DEMO_TAG]}
PAY_EXAMPLE_BODY = {"email": "jane@example.com"}


class DevStackError(RuntimeError):
    """The local stack cannot start (anvil or node missing, port taken, contract build failed)."""


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

    def pay_command(
        self, path: str = "/api/x402/v1/email/validate", body: object = PAY_EXAMPLE_BODY
    ) -> str:
        """One shell command that pays for a call (runnable without an activated venv)."""
        return (
            f"BAVLIO_PAYER_KEY={self.payer_key} {_bavlio_program()} pay POST "
            f"{self.url}{path} {shlex.quote(json.dumps(body))}"
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
    except DevChainError as exc:
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


def _banner(stack: DevStack, demo: DemoAccount, out: TextIO, *, smtp: bool = True) -> None:
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
        f"Keyed API (demo user {demo.email}, paid plan, {demo.credits} credits, 1 per call):\n"
        f"  {demo.keyed_command(stack.url)}\n"
        f"Search the demo prospect pool ({demo.prospects} people tagged {DEMO_TAG}, "
        "paid through x402):\n"
        f"  {stack.pay_command(CHECK_PATH, CHECK_BODY)}\n"
        "Ctrl-C stops everything.",
        file=out,
        flush=True,
    )


async def _serve(stack: DevStack, port: int, check: bool, out: TextIO) -> int:
    import uvicorn

    from server.app import create_app
    from server.devseed import seed_demo
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
    demo = await seed_demo(settings)  # before the app starts: its prospect index sees the pool
    prober = configured_prober(settings=settings)
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
    _banner(stack, demo, out, smtp=prober is not None)
    if not check:
        await task
        return 0
    try:
        return await _self_test(stack, demo, out)
    finally:
        server.should_exit = True
        await task


async def _self_test(stack: DevStack, demo: DemoAccount, out: TextIO) -> int:
    """Pay for a demo prospect search (rows expected), then make the printed keyed call."""
    import httpx

    from server.payclient import PayError, pay, receipt

    url = stack.url + CHECK_PATH
    try:
        paid = await pay("POST", url, json.dumps(CHECK_BODY).encode(), stack.payer_key)
    except PayError as exc:
        print(f"bavlio dev --check: {exc}", file=sys.stderr)
        return 1
    rows = _rows(paid.body)
    print(f"POST {url} -> {paid.status}, {rows} prospects", file=out)
    print(json.dumps(receipt(paid)), file=out, flush=True)
    settled = paid.status == 200 and paid.settlement is not None and paid.settlement.success
    keyed_url = stack.url + KEYED_EXAMPLE_PATH
    async with httpx.AsyncClient(timeout=30) as http:  # what the printed curl sends
        keyed = await http.post(
            keyed_url,
            json=KEYED_EXAMPLE_BODY,
            headers={"Authorization": f"Bearer {demo.api_key}"},
        )
    print(f"POST {keyed_url} -> {keyed.status_code}", file=out)
    print(keyed.text.rstrip("\n"), file=out, flush=True)
    return 0 if settled and rows > 0 and keyed.status_code == 200 else 1


def _rows(body: bytes) -> int:
    """How many prospects a search answer holds (0 when it is not one)."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return 0
    return len(data) if isinstance(data, list) else 0


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
            try:
                stack = _prepare(chain, port, state_dir.resolve())
            except DevChainError as exc:  # contract build, deployment or funding failed
                raise DevStackError(str(exc)) from None
            return asyncio.run(_serve(stack, port, check, out))
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
