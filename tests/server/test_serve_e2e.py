"""`bavlio serve` as a real process on a free loopback port, spoken to over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from lab.dnslab import DnsLab

from server.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dns_lab: DnsLab) -> Iterator[str]:
    """A running `bavlio serve` (``--port`` overriding the config file) with a pool imported by the CLI."""
    work = tmp_path_factory.mktemp("serve")
    port = _free_port()
    config = work / "bavlio.toml"
    config.write_text(f'database_url = "sqlite:///{work / "db.sqlite3"}"\nport = 1\n')
    people = work / "people.json"
    people.write_text('[{"name": "Ada", "tags": ["ai", "math"]}, {"name": "Bo", "tags": ["ai"]}]')
    assert main(["prospects", "import", str(people), "--config", str(config)]) == 0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")},
        "EMAILINTEL_NAMESERVERS": dns_lab.nameserver,
    }
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"bavlio serve exited with {proc.returncode}: {output}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("bavlio serve did not answer /health")
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        # uvicorn shuts down cleanly, then re-raises the signal it caught
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_health_over_http(served: str) -> None:
    response = httpx.get(served + "/api/v1/health", headers={"X-Request-Id": "e2e-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "e2e-1"


def test_ready_over_http(served: str) -> None:
    response = httpx.get(served + "/api/v1/ready", timeout=10)
    assert response.status_code == 200, response.text


def test_errors_over_http(served: str) -> None:
    missing = httpx.get(served + "/missing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "route_not_found"
    bad = httpx.post(served + "/api/x402/v1/prospects/search", content=b"{")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"


def test_search_over_http(served: str) -> None:
    response = httpx.post(served + "/api/x402/v1/prospects/search", json={"tags": ["math", "ai"]})
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["data"]] == ["Ada", "Bo"]


def test_openapi_over_http(served: str) -> None:
    document = httpx.get(served + "/openapi.json").json()
    assert document["openapi"] == "3.1.0"
