"""OpenAPI 3.1 document generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import server
from server.errors import ErrorEnvelope
from server.routes import Operation
from server.settings import Settings
from x402gw.wire import PaymentRequiredV1

__all__ = ["PaidRoute", "api_version", "openapi_document", "paid_routes"]

REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]


class PaidRoute(BaseModel):
    """Price metadata of one paid route (what the payment middleware and ``x-x402`` carry)."""

    method: str
    path: str
    scheme: Literal["exact"] = "exact"
    price: str
    amount: str
    network: str
    asset: str
    asset_name: str
    asset_version: str
    pay_to: str | None
    handler_timeout: float = 30.0
    upfront: bool = False
    """Settled before the handler runs (the wallet-paid keyed routes: buying credits)."""

    def extension(self) -> dict[str, Any]:
        """The ``x-x402`` object for the OpenAPI operation."""
        return {
            "scheme": self.scheme,
            "price": self.price,
            "amount": self.amount,
            "network": self.network,
            "asset": self.asset,
            "assetName": self.asset_name,
            "assetVersion": self.asset_version,
            "payTo": self.pay_to,
        }


def _amount(price: Decimal, decimals: int) -> str:
    return str(int(price.scaleb(decimals)))


def paid_routes(settings: Settings, ops: tuple[Operation, ...]) -> tuple[PaidRoute, ...]:
    """Price metadata for every operation the x402 gate prices, from settings."""
    out = []
    for op in ops:
        if not op.gated:
            continue
        price = (
            settings.price_table()[op.price_key].usd
            if op.wallet and op.price_key is not None
            else settings.price(op.path)
        )
        out.append(
            PaidRoute(
                method=op.method,
                path=op.full_path,
                price=f"${price}",
                amount=_amount(price, settings.asset_decimals),
                network=settings.network,
                asset=settings.asset,
                asset_name=settings.asset_name,
                asset_version=settings.asset_version,
                pay_to=settings.pay_to,
                handler_timeout=op.deadline,
                upfront=op.wallet,
            )
        )
    return tuple(out)


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}


def openapi_document(settings: Settings, ops: tuple[Operation, ...]) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document as a dict."""
    models: list[tuple[type[BaseModel], Mode]] = [
        (ErrorEnvelope, "serialization"),
        (PaymentRequiredV1, "serialization"),
    ]
    for op in ops:
        models.append((op.response_model, "serialization"))
        models.extend((m, "serialization") for m in op.responses.values())
        if op.request_model is not None:
            models.append((op.request_model, "validation"))
    refs, defs = models_json_schema(models, ref_template=REF)
    prices = {route.path: route for route in paid_routes(settings, ops)}
    paths: dict[str, dict[str, Any]] = {}
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": refs[(ErrorEnvelope, "serialization")]}},
    }
    for op in ops:
        binary = getattr(op.response_model, "binary_media_type", None)  # a download, not JSON
        ok_content = (
            {binary: {"schema": {"type": "string", "format": "binary"}}}
            if isinstance(binary, str)
            else {"application/json": {"schema": refs[(op.response_model, "serialization")]}}
        )
        responses: dict[str, Any] = {
            str(op.status_code): {"description": "OK", "content": ok_content}
        }
        for status, model in op.responses.items():
            responses[str(status)] = {
                "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else "",
                "content": {"application/json": {"schema": refs[(model, "serialization")]}},
            }
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "description": (op.endpoint.__doc__ or "").strip(),
            "tags": [op.tag],
            "responses": responses,
        }
        if op.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {op.request_content: {"schema": refs[(op.request_model, "validation")]}},
            }
            responses["400"] = {**error, "description": "Malformed body or invalid parameters"}
        elif op.request_body is not None:
            operation["requestBody"] = {"required": True, "content": op.request_body}
            responses["400"] = {**error, "description": "Malformed body or invalid parameters"}
        if op.status_code == 204:  # no body
            responses["204"] = {"description": "No Content"}
        if op.gated:
            route = prices[op.full_path]
            operation["x-x402"] = route.extension()
            responses[str(op.status_code)]["headers"] = {
                "PAYMENT-RESPONSE": {
                    "description": "Base64-encoded x402 settlement: success, transaction, "
                    "payer, network (absent when payments are off).",
                    "schema": {"type": "string"},
                }
            }
            responses["402"] = {
                "description": f"Payment required: {route.price} (x402). The v2 challenge is the "
                "base64 JSON in the PAYMENT-REQUIRED header; the body is the v1 challenge.",
                "headers": {
                    "PAYMENT-REQUIRED": {
                        "description": "Base64-encoded x402 v2 PaymentRequired object.",
                        "schema": {"type": "string"},
                    }
                },
                "content": {
                    "application/json": {"schema": refs[(PaymentRequiredV1, "serialization")]}
                },
            }
        parameters = _parameters(op)
        if parameters:
            operation["parameters"] = parameters
        if op.keyed:
            _keyed(op, operation, responses, error)
        responses["default"] = error
        paths.setdefault(op.full_path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bavlio API",
            "version": api_version(),
            "description": (server.__doc__ or "").strip(),
        },
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (bav_live_…) or a session JWT.",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_PATH_PARAM = re.compile(r"{([a-z_]+)}")


def _parameters(op: Operation) -> list[dict[str, Any]]:
    declared = {p.name: p for p in op.path_params}
    out: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(op.path):
        param: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if name in declared:
            param["schema"] = declared[name].schema
            param["description"] = declared[name].description
        else:
            param["schema"] = {"type": "string"}
        out.append(param)
    out.extend(
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for q in op.query
    )
    if op.keyed and not op.wallet and op.method not in ("GET", "HEAD"):
        out.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                "description": "Retries with the same key and body replay the first response "
                "(Idempotent-Replayed: true) for 24 h.",
            }
        )
    return out


def _keyed(
    op: Operation, operation: dict[str, Any], responses: dict[str, Any], error: dict[str, Any]
) -> None:
    operation["security"] = (
        [{"bearerAuth": []}] if op.access == "jwt" else [{"bearerAuth": []}, {"apiKeyHeader": []}]
    )
    operation["x-access"] = op.access
    if op.scope is not None:
        level = "read" if op.method == "GET" else "write"
        operation["x-scope"] = f"{op.scope}:{level}"
    if op.price_key is not None:
        operation["x-price-key"] = op.price_key
    responses["401"] = {**error, "description": "Missing, invalid or revoked credentials"}
    responses["403"] = {**error, "description": "The key's scopes or the plan exclude this"}
    responses["429"] = {**error, "description": "Rate limited; see Retry-After"}
    if op.method not in ("GET", "HEAD"):
        responses["409"] = {
            **error,
            "description": "Conflict (or the same Idempotency-Key in flight)",
        }
        if not op.wallet:  # the payment is a wallet-paid operation's idempotency key
            responses["422"] = {
                **error,
                "description": "Idempotency-Key reused with another request",
            }


def api_version() -> str:
    """The installed package version (0.0.0 from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bavlio")
    except PackageNotFoundError:
        return "0.0.0"
