"""`bavlio serve` as a real process on a free loopback port, spoken to over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lab.dnslab import DnsLab
from processes import free_port, serving_process
from tests_server_helpers import assert_envelope

from server.cli import main

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
        [sys.executable, "-m", "server", "serve", "--unpaid", "--port", str(free_port())],
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
