"""Broadcasts from one operator key, serialised across the processes of one host.

A settler keeps its account nonce in the process. Several worker processes settling with the same
key (``uvicorn --workers``, gunicorn) would hand out the same nonce twice; with a
:class:`FileSignerLock` shared by them, each broadcast reads the node's pending nonce, signs and
sends while holding an exclusive ``flock`` on one file. The kernel drops the lock when a process
dies, so a crash never leaves it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from x402gw.errors import SignerLockError


def _release_if_taken(fd: int, done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class SignerLock(Protocol):
    """Mutual exclusion for one operator key's nonce allocation and broadcast."""

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held from reading the pending nonce until the transaction was sent (or refused)."""
        ...


class FileSignerLock:
    """An exclusive ``flock`` on ``path``, shared by every process given the same path.

    One holder per process at a time is the caller's job (the settler takes its own asyncio
    lock first); this lock orders the processes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._descriptor()  # a path that cannot be opened is refused now, not at the first payment

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise SignerLockError(f"cannot open signer lock {self.path}: {exc}") from exc
        return self._fd

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Wait for the lock (in a worker thread when another process holds it), then hold it."""
        fd = self._descriptor()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # uncontended: no thread hop
        except BlockingIOError:
            waiting = asyncio.get_running_loop().run_in_executor(
                None, fcntl.flock, fd, fcntl.LOCK_EX
            )
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                # The thread may still get the lock after we gave up: let it go at once then.
                waiting.add_done_callback(functools.partial(_release_if_taken, fd))
                raise
            except OSError as exc:
                raise SignerLockError(f"cannot lock {self.path}: {exc}") from exc
        except OSError as exc:
            raise SignerLockError(f"cannot lock {self.path}: {exc}") from exc
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (a later :meth:`hold` reopens it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
