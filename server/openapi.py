"""OpenAPI 3.1 document generated from the route table and the pydantic models."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import server
from server.errors import ErrorEnvelope
from server.routes import Operation
from server.settings import Settings
from x402gw.wire import PaymentRequiredV1

__all__ = ["PaidRoute", "openapi_document", "paid_routes"]

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
    """Price metadata for every paid operation, from settings."""
    out = []
    for op in ops:
        if not op.paid:
            continue
        price = settings.price(op.path)
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
        responses: dict[str, Any] = {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": refs[(op.response_model, "serialization")]}
                },
            }
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
                "content": {"application/json": {"schema": refs[(op.request_model, "validation")]}},
            }
            responses["400"] = {**error, "description": "Malformed JSON or invalid parameters"}
        if op.paid:
            route = prices[op.full_path]
            operation["x-x402"] = route.extension()
            responses["200"]["headers"] = {
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
        responses["default"] = error
        paths.setdefault(op.full_path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bavlio API",
            "version": _version(),
            "description": (server.__doc__ or "").strip(),
        },
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bavlio")
    except PackageNotFoundError:
        return "0.0.0"
