"""Liveness (``/health``) and readiness (``/api/v1/ready``: database, chain RPC, DNS).

Readiness is public, so a failed check says only what failed (an exception type, an HTTP status,
"timed out"); the upstream's own words, which may quote the RPC URL and its provider key, go to
the server log with URLs redacted. The RPC and DNS answers are reused for
``ready_cache_seconds``, so a burst of probes does not become a burst of RPC calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import ErrorBody, ErrorEnvelope, request_id_of
from server.redact import redact, redact_url
from server.services import Services, services

__all__ = [
    "CheckResult",
    "HealthResponse",
    "NotReadyResponse",
    "ReadyResponse",
    "check_database",
    "check_dns",
    "check_rpc",
    "health",
    "ready",
]

_DNS_ANSWERED = {"ok", "nxdomain", "no_mx", "null_mx"}

log = logging.getLogger("server.ready")


class HealthResponse(BaseModel):
    """The process is up and serving."""

    status: Literal["ok"] = "ok"


class CheckResult(BaseModel):
    """One dependency: ``ok``, ``fail`` (with ``detail``) or ``skipped`` (not configured)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "fail", "skipped"]
    detail: str | None = None
    elapsed_ms: float | None = None


class ReadyResponse(BaseModel):
    """Every dependency answered."""

    status: Literal["ok"] = "ok"
    checks: dict[str, CheckResult]


class NotReadyResponse(ErrorEnvelope):
    """The error envelope (code ``not_ready``) plus the per-check details."""

    status: Literal["unavailable"] = "unavailable"
    checks: dict[str, CheckResult] = Field(default_factory=dict)


def _failed(check: str, detail: str, logged: str) -> CheckResult:
    """A failed check: ``detail`` for the client, ``logged`` (URLs redacted) for the log."""
    log.warning("ready: %s check failed: %s", check, redact(logged))
    return CheckResult(status="fail", detail=detail)


async def _timed(
    name: str, check: Awaitable[CheckResult], limit: float, upstream: str | None = None
) -> CheckResult:
    start = time.perf_counter()
    label = f"{name} ({redact_url(upstream)})" if upstream else name
    try:
        result = await asyncio.wait_for(check, limit)
    except TimeoutError:
        result = _failed(label, f"timed out after {limit:g}s", f"timed out after {limit:g}s")
    except Exception as exc:
        result = _failed(label, type(exc).__name__, f"{type(exc).__name__}: {exc}")
    elapsed = round((time.perf_counter() - start) * 1000, 2)
    return result.model_copy(update={"elapsed_ms": elapsed})


async def check_database(svc: Services) -> CheckResult:
    """``SELECT 1`` on the configured database."""
    await svc.db.ping()
    return CheckResult(status="ok")


async def check_rpc(svc: Services) -> CheckResult:
    """JSON-RPC ``eth_chainId`` against ``rpc_url``; the answer must match ``network``."""
    url = svc.settings.rpc_url
    if url is None:
        return CheckResult(status="skipped", detail="rpc_url is not configured")
    payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    response = await svc.http.post(url, json=payload)
    label = f"rpc ({redact_url(url)})"
    if response.is_error:
        return _failed(label, f"HTTP {response.status_code}", f"HTTP {response.status_code}")
    body = response.json()
    result = body.get("result") if isinstance(body, dict) else None
    try:
        chain_id = int(result, 16) if isinstance(result, str) else None
    except ValueError:
        chain_id = None
    if chain_id is None:
        return _failed(label, "unexpected eth_chainId answer", f"eth_chainId answered {body!r}")
    expected = svc.settings.chain_id
    if expected is not None and chain_id != expected:
        return CheckResult(status="fail", detail=f"chain id {chain_id}, expected {expected}")
    return CheckResult(status="ok", detail=f"chain id {chain_id}")


async def check_dns(svc: Services) -> CheckResult:
    """An MX lookup through emailintel's resolver; any authoritative answer counts."""
    facts = await svc.resolver.lookup_mx(svc.settings.ready_dns_probe)
    if facts.status in _DNS_ANSWERED:
        return CheckResult(status="ok", detail=f"{facts.domain}: {facts.status}")
    detail = f"{facts.domain}: {facts.status}"
    return _failed("dns", detail, f"{detail} {facts.error or ''}".strip())


def _run(
    svc: Services,
    name: str,
    check: Callable[[Services], Awaitable[CheckResult]],
    upstream: str | None = None,
) -> Callable[[], Awaitable[CheckResult]]:
    """One timed check, not started yet (the cache starts it only when its answer is stale)."""
    return lambda: _timed(name, check(svc), svc.settings.ready_timeout, upstream)


async def health(request: Request) -> JSONResponse:
    """Liveness: answers while the process runs, checks nothing else."""
    return JSONResponse(HealthResponse().model_dump(mode="json"))


async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when every configured dependency answers, else 503 with details."""
    svc = services(request)
    ttl = svc.settings.ready_cache_seconds
    names = ("database", "rpc", "dns")
    results = await asyncio.gather(
        _run(svc, "database", check_database)(),
        svc.ready_cache.get("rpc", ttl, _run(svc, "rpc", check_rpc, svc.settings.rpc_url)),
        svc.ready_cache.get("dns", ttl, _run(svc, "dns", check_dns)),
    )
    checks = dict(zip(names, results, strict=True))
    failed = [name for name, result in checks.items() if result.status == "fail"]
    if not failed:
        return JSONResponse(ReadyResponse(checks=checks).model_dump(mode="json"))
    request_id = request_id_of(request.scope)
    body = NotReadyResponse(
        error=ErrorBody(
            type="api_error",
            code="not_ready",
            message="Not ready: " + ", ".join(failed) + " failed.",
            request_id=request_id,
        ),
        checks=checks,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503)
