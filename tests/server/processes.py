"""Real ``bavlio serve`` processes for the server tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

__all__ = ["free_port", "run_cli_json", "serving_process"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving_process(
    work: Path, config: Path, env: dict[str, str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bavlio serve --unpaid` on a free port, its output in ``log``; stopped with SIGTERM."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--unpaid",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            env=env,
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"bavlio serve exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("bavlio serve did not answer /health")
        time.sleep(0.1)
    try:
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            # uvicorn shuts down cleanly, then re-raises the signal it caught
            assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()


async def run_cli_json(argv: list[str]) -> dict[str, str]:
    """Run a bavlio command in a thread (it runs its own loop) and parse its JSON line."""
    import asyncio
    import io
    import json

    from server.cli import main

    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return main(argv)

    assert await asyncio.to_thread(run) == 0
    parsed: dict[str, str] = json.loads(out.getvalue())
    return parsed
