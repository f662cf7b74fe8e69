"""No secret reaches a client: provider keys planted in the RPC URL (path and query) and in the
search backend's URL and key, echoed back by the upstreams' error pages, appear in no error body;
the server log names the upstream by scheme and host only.

The upstreams are a loopback HTTP server that quotes the URL it was asked for in its error pages,
as real providers' error pages often do.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from lab.dnslab import DnsLab
from lab.webserver import UvicornThread, free_port

from emailintel.dns import DnsResolver
from emailintel.search import Backoff, engine_from_env
from server.app import create_app
from server.settings import load_settings

PATH_SECRET = "pathkey8f3a9c1d"
QUERY_SECRET = "querykey77b2e0aa"
HEADER_SECRET = "headerkey5c6d4e21"
SECRETS = (PATH_SECRET, QUERY_SECRET, HEADER_SECRET)


class EchoingUpstream(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and a page quoting the requested URL."""

    server: EchoServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        echo = f"{self.command} http://{self.headers['host']}{self.path} was refused"
        if self.server.mode == "jsonrpc-error":
            status = 200
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": echo}}
            ).encode()
        else:
            status = self.server.status
            body = f"<html><body>{echo}</body></html>".encode()
        self.send_response(status)
        self.send_header("content-type", "text/html" if status != 200 else "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class EchoServer(ThreadingHTTPServer):
    mode = "page"
    status = 500


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoServer]:
    server = EchoServer(("127.0.0.1", 0), EchoingUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _base(server: EchoServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log line as formatted, tracebacks included."""
    return caplog.text


@pytest.mark.parametrize(
    ("mode", "status"), [("page", 500), ("page", 403), ("jsonrpc-error", 200), ("closed", 0)]
)
def test_ready_keeps_the_rpc_url_out_of_its_503(
    upstream: EchoServer,
    tmp_path: Path,
    dns_lab: DnsLab,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    status: int,
) -> None:
    upstream.mode, upstream.status = mode, status
    base = _base(upstream) if mode != "closed" else f"http://127.0.0.1:{free_port()}"
    settings = load_settings(
        env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        rpc_url=f"{base}/v3/{PATH_SECRET}?apikey={QUERY_SECRET}",
        ready_dns_probe="acme.test",
    )
    app = create_app(settings, resolver=DnsResolver([dns_lab.nameserver], timeout=2.0))
    with caplog.at_level(logging.WARNING), UvicornThread(app) as server:
        response = httpx.get(server.url + "/api/v1/ready", timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["checks"]["rpc"]["status"] == "fail"
    _assert_clean(response.text)
    logged = _logged(caplog)
    _assert_clean(logged)
    assert f"rpc ({base}) check failed" in logged  # the log names the upstream, redacted


def _search_env(backend: str, base: str) -> dict[str, str]:
    return {
        "EMAILINTEL_SEARCH_BACKEND": backend,
        "EMAILINTEL_SEARXNG_URL": f"{base}/{PATH_SECRET}/?token={QUERY_SECRET}",
        "EMAILINTEL_DUCKDUCKGO_URL": f"{base}/{PATH_SECRET}/html/?token={QUERY_SECRET}",
        "EMAILINTEL_BRAVE_URL": f"{base}/{PATH_SECRET}/search?token={QUERY_SECRET}",
        "EMAILINTEL_BRAVE_KEY": HEADER_SECRET,
    }


@pytest.mark.parametrize("backend", ["searxng", "duckduckgo", "brave"])
@pytest.mark.parametrize("status", [403, 401, 404, 500, 0])
def test_search_errors_keep_the_backend_url_key_and_page_out(
    upstream: EchoServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    status: int,
) -> None:
    """Refusals quote the upstream's page in emailintel's message; that was sent to the client."""
    upstream.mode, upstream.status = "page", status
    base = _base(upstream) if status else f"http://127.0.0.1:{free_port()}"
    engine = engine_from_env(_search_env(backend, base), backoff=Backoff(retries=0, base=0.0))
    settings = load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    app = create_app(settings, search=engine)
    body: dict[str, Any] = {"name": "Ann Lee", "company": "Acme"}
    with caplog.at_level(logging.WARNING), UvicornThread(app) as server:
        response = httpx.post(server.url + "/api/x402/v1/linkedin/find-url", json=body, timeout=10)
    assert response.status_code in (502, 503), response.text
    assert response.json()["error"]["code"] in ("search_unavailable", "search_rate_limited")
    _assert_clean(response.text)
    assert "was refused" not in response.text  # nothing of the upstream's page
    logged = _logged(caplog)
    assert f"emailintel SearchUnavailable: {backend}" in logged or "SearchRateLimited" in logged
    _assert_clean(logged)


class ExplodingSearch:
    """A search backend failing with a non-emailintel error that quotes its URL (a bug)."""

    name = "exploding"

    async def search(self, query: str) -> list[Any]:
        raise RuntimeError(f"cannot reach http://127.0.0.1:9/{PATH_SECRET}?key={QUERY_SECRET}")


def test_an_unexpected_error_is_logged_with_urls_redacted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    app = create_app(settings, search=ExplodingSearch())
    body = {"name": "Ann Lee", "company": "Acme"}
    with caplog.at_level(logging.ERROR), UvicornThread(app) as server:
        response = httpx.post(server.url + "/api/x402/v1/linkedin/find-url", json=body, timeout=10)
    assert response.status_code == 500
    _assert_clean(response.text)
    logged = _logged(caplog)
    assert "RuntimeError: cannot reach http://127.0.0.1:9" in logged  # the traceback is there
    _assert_clean(logged)


def test_http_client_request_logs_keep_only_scheme_and_host(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """httpx logs every request URL at INFO; the server's app redacts those records."""
    create_app(
        load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    )
    secret = "plantedsecret0123456789"
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with caplog.at_level(logging.INFO, logger="httpx"), httpx.Client(transport=transport) as http:
        http.get(f"https://rpc.example.net/v3/{secret}?key={secret}")
    messages = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert messages
    assert all(secret not in m for m in messages)
    assert any("https://rpc.example.net" in m for m in messages)
