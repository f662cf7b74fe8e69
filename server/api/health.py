"""Liveness (``/health``) and readiness (``/api/v1/ready``: database, chain RPC, DNS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import ErrorBody, ErrorEnvelope, request_id_of
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


async def _timed(check: Awaitable[CheckResult], limit: float) -> CheckResult:
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(check, limit)
    except TimeoutError:
        result = CheckResult(status="fail", detail=f"timed out after {limit:g}s")
    except Exception as exc:
        result = CheckResult(status="fail", detail=f"{type(exc).__name__}: {exc}"[:300])
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
    response.raise_for_status()
    body = response.json()
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, str):
        return CheckResult(status="fail", detail=f"unexpected eth_chainId answer: {body!r}"[:300])
    chain_id = int(result, 16)
    expected = svc.settings.chain_id
    if expected is not None and chain_id != expected:
        return CheckResult(status="fail", detail=f"chain id {chain_id}, expected {expected}")
    return CheckResult(status="ok", detail=f"chain id {chain_id}")


async def check_dns(svc: Services) -> CheckResult:
    """An MX lookup through emailintel's resolver; any authoritative answer counts."""
    facts = await svc.resolver.lookup_mx(svc.settings.ready_dns_probe)
    if facts.status in _DNS_ANSWERED:
        return CheckResult(status="ok", detail=f"{facts.domain}: {facts.status}")
    return CheckResult(
        status="fail", detail=f"{facts.domain}: {facts.status} {facts.error or ''}".strip()
    )


async def health(request: Request) -> JSONResponse:
    """Liveness: answers while the process runs, checks nothing else."""
    return JSONResponse(HealthResponse().model_dump(mode="json"))


async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when every configured dependency answers, else 503 with details."""
    svc = services(request)
    timeout = svc.settings.ready_timeout
    names = ("database", "rpc", "dns")
    results = await asyncio.gather(
        _timed(check_database(svc), timeout),
        _timed(check_rpc(svc), timeout),
        _timed(check_dns(svc), timeout),
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
