"""`bavlio serve` as a real process on a free loopback port, spoken to over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lab.dnslab import DnsLab
from tests_server_helpers import assert_envelope

from server.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PAID_BODIES = {
    "/email/validate": {"email": "ann@acme.test"},
    "/email/verify": {"email": "ann@acme.test"},
    "/email/find": {"candidates": ["ann@acme.test"]},
    "/linkedin/find-url": {"name": "Ann Lee", "company": "Acme"},
    "/prospects/search": {"tags": ["ai"]},
}
HELO = {
    "EMAILINTEL_HELO": "probe.bavlio-lab.test",
    "EMAILINTEL_MAIL_FROM": "bounce@bavlio-lab.test",
}


@contextlib.contextmanager
def serving_process(
    work: Path, config: Path, env: dict[str, str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bavlio serve --unpaid` on a free port, its output in ``log``; stopped with SIGTERM."""
    port = _free_port()
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


def _environment(dns_lab: DnsLab, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BAVLIO_", "EMAILINTEL_"))},
        "EMAILINTEL_NAMESERVERS": dns_lab.nameserver,
        **extra,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dns_lab: DnsLab) -> Iterator[str]:
    """A running `bavlio serve` (``--port`` overriding the config file) with a pool imported by the CLI."""
    work = tmp_path_factory.mktemp("serve")
    config = work / "bavlio.toml"
    config.write_text(f'database_url = "sqlite:///{work / "db.sqlite3"}"\nport = 1\n')
    people = work / "people.json"
    people.write_text('[{"name": "Ada", "tags": ["ai", "math"]}, {"name": "Bo", "tags": ["ai"]}]')
    assert main(["prospects", "import", str(people), "--config", str(config)]) == 0
    env = _environment(dns_lab, **HELO)
    with serving_process(work, config, env, work / "serve.log") as (url, proc):
        yield url
        assert proc.poll() is None, (work / "serve.log").read_text()[-2000:]


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


DEEP = {
    "80k-brackets": b"[" * 80_000,
    "1M-brackets": b"[" * 1_000_000,
    "100k-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
}


@pytest.mark.parametrize("body", list(DEEP.values()), ids=list(DEEP))
def test_deep_nesting_is_a_400_and_the_server_lives_on(served: str, body: bytes) -> None:
    """py_ecc raises the recursion limit to 100,000; json.loads then overflowed the C stack."""
    for path in PAID_BODIES:
        response = httpx.post(
            f"{served}/api/x402/v1{path}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert_envelope(response, 400, "invalid_request_error", "invalid_json")
    assert httpx.get(served + "/health").status_code == 200


@pytest.mark.parametrize("path", list(PAID_BODIES))
def test_a_5000_digit_integer_is_a_400(served: str, path: str) -> None:
    """Python refuses to convert integers of more than 4300 digits (a ValueError, once a 500)."""
    field = next(iter(PAID_BODIES[path]))
    body = b'{"' + field.encode() + b'": ' + b"7" * 5000 + b"}"
    response = httpx.post(
        f"{served}/api/x402/v1{path}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_json", "parameter_invalid")
    assert httpx.get(served + "/health").status_code == 200


def test_serve_without_helo_leaves_the_smtp_routes_out(tmp_path: Path, dns_lab: DnsLab) -> None:
    """No EMAILINTEL_HELO: verify and find are not served or documented; one line says so."""
    config = tmp_path / "bavlio.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "db.sqlite3"}"\n')
    log = tmp_path / "serve.log"
    with serving_process(tmp_path, config, _environment(dns_lab), log) as (url, _):
        for path in ("/email/verify", "/email/find"):
            for body in (b"{}", b'{"email": "ann@acme.test"}', b"{"):
                response = httpx.post(f"{url}/api/x402/v1{path}", content=body)
                assert_envelope(response, 404, "invalid_request_error", "route_not_found")
        document = httpx.get(url + "/openapi.json").json()
        assert set(document["paths"]) >= {"/api/x402/v1/email/validate", "/health"}
        assert "/api/x402/v1/email/verify" not in document["paths"]
        assert "/api/x402/v1/email/find" not in document["paths"]
        valid = httpx.post(f"{url}/api/x402/v1/email/validate", json={"email": "ann@acme.test"})
        assert valid.status_code == 200, valid.text
    warnings = [line for line in log.read_text().splitlines() if "EMAILINTEL_HELO" in line]
    assert len(warnings) == 1, log.read_text()
    assert warnings[0].startswith("bavlio: warning: ")
    assert "/email/verify" in warnings[0]
    assert "/email/find" in warnings[0]


def test_serve_with_helo_serves_the_smtp_routes_and_checks_bodies_first(
    served: str,
) -> None:
    document = httpx.get(served + "/openapi.json").json()
    assert "/api/x402/v1/email/verify" in document["paths"]
    assert "/api/x402/v1/email/find" in document["paths"]
    for path, body in (("/email/verify", b'{"mail": 1}'), ("/email/find", b"{}")):
        response = httpx.post(f"{served}/api/x402/v1{path}", content=body)
        assert response.status_code == 400, response.text


def test_serve_with_a_bad_helo_exits_2(tmp_path: Path, dns_lab: DnsLab) -> None:
    """EMAILINTEL_HELO set but unusable (no EMAILINTEL_MAIL_FROM): refused at start, one line."""
    env = _environment(dns_lab, EMAILINTEL_HELO="probe.bavlio-lab.test")
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--unpaid", "--port", str(_free_port())],
        env={**env, "BAVLIO_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("bavlio: invalid emailintel setting: ")
    assert "EMAILINTEL_MAIL_FROM" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_the_recursion_limit_stays_low_after_the_chain_stack_loads(tmp_path: Path) -> None:
    """x402gw loads web3/eth_account lazily: the limit must stay at 1,000 after they load."""
    code = (
        "import sys; from server.app import create_app; from server.settings import load_settings; "
        f"create_app(load_settings(env_file=None, database_url='sqlite+aiosqlite:///{tmp_path}/b.db')); "
        "import eth_account, x402gw.chain; print(sys.getrecursionlimit())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1000"
