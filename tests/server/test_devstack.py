"""`bavlio dev` as a real process: anvil, token, demo wallet and the paid server; paid through the
command it prints; stopped by SIGTERM or SIGINT (Ctrl-C). Also ``--check`` and a taken port."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lab.anvil import free_port
from lab.dnslab import DnsLab

BIN = Path(sys.executable).parent
READY = "Ctrl-C stops everything."


def _env(dns_lab: DnsLab) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")}
    env["EMAILINTEL_NAMESERVERS"] = dns_lab.nameserver  # names outside the lab: NXDOMAIN
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def dev(tmp_path: Path, dns_lab: DnsLab) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A running `bavlio dev` and its banner."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=_env(dns_lab),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    banner = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.strip() == READY:
            break
    text = "".join(banner)
    if READY not in text:
        proc.kill()
        pytest.fail(f"bavlio dev did not start: {text}{proc.communicate()[1]}")
    try:
        yield proc, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_dev_serves_a_paid_call_and_stops_on_a_signal(
    dev: tuple[subprocess.Popen[str], str], tmp_path: Path, dns_lab: DnsLab, stop: signal.Signals
) -> None:
    proc, banner = dev
    rpc_url = re.search(r"anvil (http://127\.0\.0\.1:\d+)", banner)
    assert rpc_url is not None
    command = banner.split("Pay for a call:\n", 1)[1].splitlines()[0].strip()
    words = shlex.split(command)
    assert words[0].startswith("BAVLIO_PAYER_KEY=0x")
    assert Path(words[1]).name == "bavlio"
    assert words[2:4] == ["pay", "POST"]
    assert words[4].endswith("/api/x402/v1/email/validate")
    env_file = (tmp_path / ".bavlio-dev" / "env").read_text()
    assert f"BAVLIO_PAYER_KEY={words[0].split('=', 1)[1]}" in env_file

    paid = subprocess.run(
        ["bash", "-c", command], env=_env(dns_lab), capture_output=True, text=True, timeout=60
    )
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["risk_level"] == "invalid"  # example.com: NXDOMAIN in the lab
    receipt = json.loads(paid.stderr.strip().splitlines()[-1])
    assert receipt["paid"] is True
    assert receipt["network"] == "eip155:31337"
    assert receipt["amount"] == "3000"
    mined = httpx.post(
        rpc_url.group(1),
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getTransactionReceipt",
            "params": [receipt["transaction"]],
        },
    ).json()["result"]
    assert int(mined["status"], 16) == 1

    proc.send_signal(stop)
    assert proc.wait(timeout=20) == 0
    server = words[4].split("/api/", 1)[0]
    with pytest.raises(httpx.TransportError):
        httpx.get(server + "/health", timeout=2)
    with pytest.raises(httpx.TransportError):  # anvil stopped with it
        httpx.post(rpc_url.group(1), json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})


def test_dev_check_pays_one_call_and_exits(tmp_path: Path, dns_lab: DnsLab) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "dev", "--check", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(dns_lab),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout.strip().splitlines()[-1])
    assert receipt["paid"] is True
    assert receipt["status"] == 200
    assert re.fullmatch(r"0x[0-9a-f]{64}", receipt["transaction"])


def test_dev_refuses_a_taken_port(tmp_path: Path, dns_lab: DnsLab) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "server", "dev", "--port", str(port)],
            cwd=tmp_path,
            env=_env(dns_lab),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.startswith("bavlio dev: port ")
    assert len(done.stderr.strip().splitlines()) == 1
