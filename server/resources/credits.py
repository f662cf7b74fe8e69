"""The credits group: balance, transactions (both paginations, operation filter), estimates."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.billing.credits import Entry
from server.billing.pricing import ChargedKey, credits_for
from server.errors import InvalidRequest
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.jsontypes import JsonInt
from server.resources._common import json_response, list_response

__all__ = [
    "CreditBalance",
    "Estimate",
    "EstimateRequest",
    "Transaction",
    "TransactionList",
    "balance",
    "estimate",
    "transactions",
]

_OPERATION = r"^[a-z_][a-z0-9_.]{0,63}$"


class CreditPackage(BaseModel):
    """Where credits came from (grants, signup bonus, purchases), summed per kind."""

    kind: str
    credits: int


class CreditBalance(BaseModel):
    """The account's position."""

    total_credits: int = Field(description="Credits on the account (held ones included).")
    available_credits: int = Field(description="What new work may reserve.")
    held_credits: int = Field(description="Reserved by running jobs; captured or returned.")
    used_credits: int
    granted_credits: int
    packages: list[CreditPackage]


async def balance(request: Request, ctx: KeyedContext) -> Response:
    """Credits on the account, available, held by running work, used, and where they came from."""
    position = await ctx.keyed.credits.balance(ctx.user_id)
    return json_response(
        CreditBalance(
            total_credits=position.balance,
            available_credits=position.available,
            held_credits=position.held,
            used_credits=position.used,
            granted_credits=position.granted,
            packages=[CreditPackage(kind="credited", credits=position.granted)]
            if position.granted
            else [],
        )
    )


class Transaction(BaseModel):
    """One ledger line: positive credits in, negative credits out."""

    id: str
    kind: Literal["grant", "purchase", "debit", "refund"]
    amount: int
    operation_type: str | None
    reference: str
    balance_after: int
    created_at: float

    @classmethod
    def of(cls, entry: Entry) -> Transaction:
        """From a ledger entry."""
        return cls(
            id=entry.id,
            kind=entry.kind.value,
            amount=entry.amount,
            operation_type=entry.operation,
            reference=entry.reference,
            balance_after=entry.balance_after,
            created_at=entry.created_at,
        )


class TransactionList(BaseModel):
    """A page of the ledger."""

    data: list[Transaction]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


async def transactions(request: Request, ctx: KeyedContext) -> Response:
    """The ledger, newest first; ``operation_type`` filters, ``cursor`` or ``offset`` pages."""
    page = page_request(request.query_params)
    operation = request.query_params.get("operation_type")
    if operation is not None and not _valid_operation(operation):
        raise InvalidRequest("parameter_invalid", "Invalid operation_type.", param="operation_type")
    rows = await ctx.keyed.credits.entries(
        ctx.user_id,
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
        operation=operation,
    )
    return list_response(rows, page, Transaction.of, lambda e: e.id)


def _valid_operation(value: str) -> bool:
    return bool(re.match(_OPERATION, value))


class EstimateRequest(BaseModel):
    """An operation (a price key such as ``email.verify``) and how many units."""

    model_config = ConfigDict(extra="forbid", strict=True)

    operation: ChargedKey = Field(
        description="A price key of the pricing table (credits.purchase sells credits: not here)."
    )
    count: JsonInt = Field(default=1, ge=1, le=1_000_000)


class Estimate(BaseModel):
    """What it would cost, before and after the volume discount, against what is available."""

    operation: str
    count: int
    unit: str
    credits_per_unit: int
    subtotal: int
    discount_percent: int
    total: int
    available_credits: int
    sufficient: bool


async def estimate(request: Request, ctx: KeyedContext) -> Response:
    """Price an operation in credits without spending any."""
    body = await read_json(request, EstimateRequest)
    table = ctx.services.prices
    price = table[body.operation]
    charge = credits_for(price, body.count)
    available = (await ctx.keyed.credits.balance(ctx.user_id)).available
    return json_response(
        Estimate(
            operation=body.operation,
            count=body.count,
            unit=price.unit,
            credits_per_unit=price.credits,
            subtotal=charge.subtotal,
            discount_percent=charge.discount_percent,
            total=charge.total,
            available_credits=available,
            sufficient=available >= charge.total,
        )
    )
