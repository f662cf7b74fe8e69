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

from server.devseed import DEMO_CREDITS, DEMO_PROSPECTS

BIN = Path(sys.executable).parent
READY = "Ctrl-C stops everything."
DEMO_NAMES = {p["name"] for p in DEMO_PROSPECTS}


def _after(banner: str, heading: str) -> str:
    """The command printed on the line after the line starting with ``heading``."""
    lines = banner.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return lines[index + 1].strip()


def _curl(command: str) -> httpx.Response:
    """Send what a ``curl -sS -X M URL -H .. -d ..`` command line sends, with httpx."""
    words = shlex.split(command)
    assert words[0] == "curl"
    method, url, headers, body = "GET", None, {}, None
    rest = iter(words[1:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(rest).encode()
        elif word == "-sS":
            continue
        else:
            assert url is None, f"unexpected curl word {word!r}"
            url = word
    assert url is not None
    return httpx.request(method, url, headers=headers, content=body, timeout=30)


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

    # the keyed example, as printed: a demo key with credits, charged 1 credit
    keyed = _after(banner, "Keyed API (demo user demo@example.com, paid plan, ")
    assert keyed.startswith("curl ")
    answer = _curl(keyed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["risk_level"] == "invalid"  # example.com: NXDOMAIN in the lab
    key = re.search(r"Bearer (bav_live_\S+?)'", keyed)
    assert key is not None
    balance = httpx.get(
        words[4].split("/api/", 1)[0] + "/api/v1/credits/balance",
        headers={"Authorization": f"Bearer {key.group(1)}"},
    ).json()
    assert (balance["used_credits"], balance["available_credits"]) == (1, DEMO_CREDITS - 1)

    # the demo prospect pool, paid through x402 with the printed command
    search = _after(banner, "Search the demo prospect pool (5 people tagged demo")
    assert shlex.split(search)[4].endswith("/api/x402/v1/prospects/search")
    found = subprocess.run(
        ["bash", "-c", search], env=_env(dns_lab), capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0, found.stderr
    assert {p["name"] for p in json.loads(found.stdout)["data"]} == DEMO_NAMES
    assert json.loads(found.stderr.strip().splitlines()[-1])["paid"] is True

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
    out = done.stdout.strip().splitlines()
    searched = next(i for i, line in enumerate(out) if "/api/x402/v1/prospects/search ->" in line)
    assert out[searched].endswith(f"-> 200, {len(DEMO_PROSPECTS)} prospects")
    receipt = json.loads(out[searched + 1])
    assert receipt["paid"] is True
    assert receipt["status"] == 200
    assert re.fullmatch(r"0x[0-9a-f]{64}", receipt["transaction"])
    assert out[searched + 2].endswith("/api/v1/email-verification/validate -> 200")
    assert json.loads(out[searched + 3])["risk_level"] == "invalid"  # NXDOMAIN in the lab


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
