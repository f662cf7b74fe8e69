"""Liveness and readiness: database, chain RPC (a real anvil) and DNS (the NSD lab or the stub)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import serving
from lab.anvil import CHAIN_ID, AnvilChain
from lab.dnslab import BlackHoleDns, CountingRelay, DnsLab
from lab.webserver import UvicornThread
from starlette.applications import Starlette
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from server.app import create_app
from server.settings import Settings, load_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(sqlite_url: str, **changes: object) -> Settings:
    return load_settings(env_file=None, database_url=sqlite_url, **changes)


async def test_health_on_both_paths(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/api/v1/health"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


async def test_ready_when_everything_answers(
    sqlite_url: str, lab_resolver: DnsResolver, anvil: AnvilChain
) -> None:
    settings = _settings(
        sqlite_url, rpc_url=anvil.url, network=f"eip155:{CHAIN_ID}", ready_dns_probe="acme.test"
    )
    async with serving(create_app(settings, resolver=lab_resolver)) as c:
        response = await c.get("/api/v1/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "rpc": "ok",
        "dns": "ok",
    }
    assert body["checks"]["rpc"]["detail"] == f"chain id {CHAIN_ID}"


async def test_ready_without_rpc_skips_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ready")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["rpc"]["status"] == "skipped"
    assert checks["dns"]["status"] == "ok"  # example.com: NXDOMAIN, an answer


async def test_ready_503_when_rpc_port_is_closed(
    sqlite_url: str, stub_resolver: DnsResolver
) -> None:
    settings = _settings(sqlite_url, rpc_url=f"http://127.0.0.1:{_closed_port()}")
    async with serving(create_app(settings, resolver=stub_resolver)) as c:
        response = await c.get("/api/v1/ready", headers={"X-Request-Id": "ready-1"})
    error = assert_envelope(response, 503, "api_error", "not_ready")
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["rpc"]["status"] == "fail"
    assert "ConnectError" in body["checks"]["rpc"]["detail"]
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["dns"]["status"] == "ok"
    assert error["message"] == "Not ready: rpc failed."


async def test_ready_503_on_chain_id_mismatch(
    sqlite_url: str, lab_resolver: DnsResolver, anvil: AnvilChain
) -> None:
    settings = _settings(sqlite_url, rpc_url=anvil.url, network="eip155:8453")
    async with serving(create_app(settings, resolver=lab_resolver)) as c:
        response = await c.get("/api/v1/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["rpc"]["detail"] == f"chain id {CHAIN_ID}, expected 8453"


async def test_ready_503_when_dns_does_not_answer(sqlite_url: str) -> None:
    with BlackHoleDns() as hole:
        resolver = DnsResolver([hole.nameserver], timeout=0.3)
        async with serving(create_app(_settings(sqlite_url), resolver=resolver)) as c:
            response = await c.get("/api/v1/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["dns"]["status"] == "fail"
    assert "timeout" in checks["dns"]["detail"]
    assert response.json()["error"]["message"] == "Not ready: dns failed."


async def test_ready_503_when_database_is_gone(tmp_path: Path, stub_resolver: DnsResolver) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    settings = _settings(f"sqlite+aiosqlite:///{db_dir / 'x.sqlite3'}")
    app = create_app(settings, resolver=stub_resolver)
    async with serving(app) as c:
        await app.state.services.db.dispose()
        for child in db_dir.iterdir():
            child.unlink()
        db_dir.rmdir()
        response = await c.get("/api/v1/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["status"] == "fail"


class CountingRpc(BaseHTTPRequestHandler):
    """A JSON-RPC endpoint answering eth_chainId (anvil's id) and counting the calls."""

    server: CountingRpcServer

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            self.server.calls += 1
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": hex(CHAIN_ID)})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


class CountingRpcServer(ThreadingHTTPServer):
    calls = 0
    lock = threading.Lock()


@pytest.fixture
def counting_rpc() -> Iterator[CountingRpcServer]:
    server = CountingRpcServer(("127.0.0.1", 0), CountingRpc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dns_relay(dns_lab: DnsLab) -> Iterator[CountingRelay]:
    relay = CountingRelay(dns_lab.nameserver)
    relay.start()
    yield relay
    relay.stop()


def _ready_app(
    sqlite_url: str, rpc: CountingRpcServer, relay: CountingRelay, cache: float
) -> Starlette:
    settings = _settings(
        sqlite_url,
        rpc_url=f"http://127.0.0.1:{rpc.server_address[1]}",
        network=f"eip155:{CHAIN_ID}",
        ready_dns_probe="acme.test",
        ready_cache_seconds=cache,
    )
    return create_app(settings, resolver=DnsResolver([relay.nameserver], timeout=2.0))


async def test_ready_hammered_asks_the_rpc_and_dns_once(
    sqlite_url: str, counting_rpc: CountingRpcServer, dns_relay: CountingRelay
) -> None:
    with UvicornThread(_ready_app(sqlite_url, counting_rpc, dns_relay, 60)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            first = await client.get("/api/v1/ready")
            assert first.status_code == 200, first.text
            dns_queries = dns_relay.count("acme.test")
            for _ in range(10):
                assert (await client.get("/api/v1/ready")).status_code == 200
            burst = await asyncio.gather(*(client.get("/api/v1/ready") for _ in range(20)))
    assert [r.status_code for r in burst] == [200] * 20
    assert counting_rpc.calls == 1
    assert dns_queries >= 1
    assert dns_relay.count("acme.test") == dns_queries


async def test_ready_concurrent_first_probes_share_one_rpc_call(
    sqlite_url: str, counting_rpc: CountingRpcServer, dns_relay: CountingRelay
) -> None:
    with UvicornThread(_ready_app(sqlite_url, counting_rpc, dns_relay, 60)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            burst = await asyncio.gather(*(client.get("/api/v1/ready") for _ in range(20)))
    assert [r.status_code for r in burst] == [200] * 20
    assert counting_rpc.calls == 1


async def test_ready_cache_can_be_turned_off(
    sqlite_url: str, counting_rpc: CountingRpcServer, dns_relay: CountingRelay
) -> None:
    with UvicornThread(_ready_app(sqlite_url, counting_rpc, dns_relay, 0)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for _ in range(5):
                assert (await client.get("/api/v1/ready")).status_code == 200
    assert counting_rpc.calls == 5
