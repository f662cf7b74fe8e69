"""Helpers every resource module shares: JSON responses from models, list pages, path ids.

Every list answers ``{data, has_more, next_cursor, limit, offset}``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import NotFound
from server.http.pagination import PageRequest, page_of
from server.ids import is_id

__all__ = ["json_response", "list_response", "path_id"]

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A model as JSON (None fields kept, so the shape is stable)."""
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code, headers=headers)


def list_response(
    rows: Sequence[R],
    page: PageRequest,
    to_model: Callable[[R], T],
    id_of: Callable[[R], str],
) -> JSONResponse:
    """A page of ``rows`` (fetched with ``limit + 1``) in the list envelope."""
    sliced = page_of(rows, page, id_of)
    return JSONResponse(
        {
            "data": [to_model(row).model_dump(mode="json") for row in sliced.data],
            "has_more": sliced.has_more,
            "next_cursor": sliced.next_cursor,
            "limit": page.limit,
            "offset": page.offset,
        }
    )


def path_id(request: Request, name: str, prefix: str, what: str) -> str:
    """A path parameter that must be an id of type ``prefix``; a malformed one is a 404 too
    (as for another user's id: nothing tells the two apart)."""
    value = str(request.path_params.get(name, ""))
    if not is_id(value, prefix):
        raise NotFound(f"{what}_not_found", f"No {what.replace('_', ' ')} {value!r}.")
    return value
