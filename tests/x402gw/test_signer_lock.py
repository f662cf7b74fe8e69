"""FileSignerLock: one holder across processes, released by a crash, never leaked by a cancelled
waiter; and two settlers on one key (as two worker processes would be) never reuse a nonce."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from x402gw.chain import ChainClient, Settler, transfer_calldata
from x402gw.errors import ChainError, SignerLockError
from x402gw.exact_evm import Candidate, check_offchain
from x402gw.signer_lock import FileSignerLock

if TYPE_CHECKING:
    from conftest import EvmLab, PayFunction

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()
    fcntl.flock(fd, fcntl.LOCK_UN)
    print("released", flush=True)
    """
)
TRY_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy")
    else:
        print("free")
    """
)


class CountingClient(ChainClient):
    """A ChainClient that notes the methods it sends."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[str] = []

    async def request(self, method: str, params: list[Any], *, reverts: bool = False) -> Any:
        self.calls.append(method)
        return await super().request(method, params, reverts=reverts)


def now() -> int:
    return int(time.time())


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _other_process_sees(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(path)], capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip()


async def _hold_in_task(lock: FileSignerLock, entered: asyncio.Event) -> None:
    async with lock.hold():
        entered.set()


@dataclass
class Queued:
    """Another process holds the lock file; our task waits to hold it."""

    path: Path
    lock: FileSignerLock
    holder: subprocess.Popen[str]
    entered: asyncio.Event
    task: asyncio.Task[None]

    def release_holder(self) -> None:
        assert self.holder.stdin is not None
        self.holder.stdin.write("go\n")
        self.holder.stdin.flush()


async def _queued_behind_another_process(tmp_path: Path) -> Queued:
    path = tmp_path / "signer.lock"
    lock = FileSignerLock(path)
    holder = _holder(path)
    entered = asyncio.Event()
    task = asyncio.create_task(_hold_in_task(lock, entered))
    await asyncio.sleep(0.2)
    assert not entered.is_set()  # the other process holds it
    return Queued(path, lock, holder, entered, task)


async def test_waits_for_another_process_then_holds(tmp_path: Path) -> None:
    queued = await _queued_behind_another_process(tmp_path)
    try:
        queued.release_holder()
        await asyncio.wait_for(queued.task, 10)
        assert queued.entered.is_set()
    finally:
        queued.holder.kill()
        queued.holder.wait()
        queued.lock.close()
    assert _other_process_sees(queued.path) == "free"  # released after the block


async def test_held_lock_blocks_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "signer.lock"
    lock = FileSignerLock(path)
    async with lock.hold():
        assert await asyncio.to_thread(_other_process_sees, path) == "busy"
    assert await asyncio.to_thread(_other_process_sees, path) == "free"
    lock.close()


async def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    queued = await _queued_behind_another_process(tmp_path)
    queued.holder.kill()  # SIGKILL: no unlock of its own
    queued.holder.wait()
    await asyncio.wait_for(queued.task, 10)
    assert queued.entered.is_set()
    queued.lock.close()


async def test_a_cancelled_waiter_does_not_keep_the_lock(tmp_path: Path) -> None:
    queued = await _queued_behind_another_process(tmp_path)
    queued.task.cancel()  # gives up while its thread still waits in flock
    with pytest.raises(asyncio.CancelledError):
        await queued.task
    queued.release_holder()  # now the waiting thread gets the lock ...
    queued.holder.wait(10)
    for _ in range(100):  # ... and must let it go again by itself
        if await asyncio.to_thread(_other_process_sees, queued.path) == "free":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("a cancelled waiter kept the signer lock")
    assert not queued.entered.is_set()
    queued.lock.close()


async def test_two_settlers_on_one_key_never_share_a_nonce(
    evm: EvmLab, pay: PayFunction, offer: Any, tmp_path: Path
) -> None:
    """Two settlers with their own nonce counters and clients, as two worker processes have,
    sending concurrently from one key through one lock file."""
    path = tmp_path / "signer.lock"
    clients = [CountingClient(evm.anvil.url), CountingClient(evm.anvil.url)]
    locks = [FileSignerLock(path), FileSignerLock(path)]  # two descriptions: they exclude
    settlers = [
        Settler(client, evm.operator, signer_lock=lock)
        for client, lock in zip(clients, locks, strict=True)
    ]
    count = 40
    candidates = []
    for _ in range(count):
        requirements = offer()
        checked = check_offchain(await pay(evm.payer, requirements), requirements, now=now())
        assert isinstance(checked, Candidate)
        candidates.append(checked)
    start = int(evm.anvil.rpc("eth_getTransactionCount", evm.operator.address, "pending"), 16)
    try:
        hashes = await asyncio.gather(
            *(settlers[i % 2].send(c.token, transfer_calldata(c)) for i, c in enumerate(candidates))
        )
    finally:
        for client in clients:
            await client.aclose()
        for lock in locks:
            lock.close()
    nonces = sorted(int(evm.anvil.rpc("eth_getTransactionByHash", h)["nonce"], 16) for h in hashes)
    assert nonces == list(range(start, start + count))
    # and no broadcast was refused for a nonce the other settler had just used
    assert sum(c.calls.count("eth_sendRawTransaction") for c in clients) == count
    receipts = [evm.anvil.rpc("eth_getTransactionReceipt", h) for h in hashes]
    assert all(int(r["status"], 16) == 1 for r in receipts)
    assert evm.balance(evm.merchant) == count * 10_000


def test_a_lock_file_that_cannot_be_opened_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(SignerLockError, match="cannot open signer lock"):
        FileSignerLock(tmp_path / "no-such-dir" / "operator.lock")


async def test_a_lock_failing_mid_life_is_a_chain_error(tmp_path: Path) -> None:
    lock = FileSignerLock(tmp_path / "operator.lock")
    assert lock._fd is not None
    os.close(lock._fd)  # the descriptor went bad under it
    with pytest.raises(SignerLockError, match="cannot lock"):
        async with lock.hold():
            pass
    assert isinstance(SignerLockError("x"), ChainError)  # the middleware answers 503 for these
