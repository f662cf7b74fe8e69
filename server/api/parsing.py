"""Read a JSON body into a pydantic model, turning every failure into a 400 envelope.

The body is parsed by pydantic's JSON parser straight into the model: it is written in Rust, has
its own nesting limit (a few hundred levels) and no integer-digit limit to trip over, so no input
reaches the C-level recursion of ``json.loads``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from server.errors import InvalidRequest, RequestTooLarge
from server.jsontypes import NONBLANK, NONBLANK_MESSAGE

__all__ = ["MAX_BODY", "read_body", "read_json"]

MAX_BODY = 1 << 20
M = TypeVar("M", bound=BaseModel)

_MISSING = {"missing"}
_EXTRA = {"extra_forbidden"}
_NOT_AN_OBJECT = {"model_type", "model_attributes_type", "dict_type"}


async def read_body(request: Request) -> bytes:
    """The body, at most :data:`MAX_BODY` bytes (RequestTooLarge beyond); read once, cached."""
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:
        return cached
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise RequestTooLarge("body_too_large", f"The body exceeds {MAX_BODY} bytes.")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_BODY:
            raise RequestTooLarge("body_too_large", f"The body exceeds {MAX_BODY} bytes.")
    request._body = bytes(chunks)  # Starlette's own cache: request.body() and stream() reuse it
    return request._body


def _param(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(part) for part in loc) or None


def _utf8(raw: bytes) -> bytes:
    """The body as UTF-8 JSON text: a UTF-8 BOM dropped, UTF-16/32 (BOM or not) re-encoded.

    RFC 8259 asks for UTF-8; the other encodings ``json.loads`` detects are still accepted.
    Raises UnicodeDecodeError for bytes that are not text in the detected encoding.
    """
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        return raw
    if encoding == "utf-8-sig":
        return raw[3:]
    return raw.decode(encoding).encode("utf-8")


def _invalid(exc: ValidationError) -> InvalidRequest:
    error = exc.errors(include_url=False)[0]
    param = _param(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if (
        error["type"] == "string_pattern_mismatch"
        and error.get("ctx", {}).get("pattern") == NONBLANK
    ):
        message = NONBLANK_MESSAGE
    if error["type"] == "json_invalid":
        detail = message.removeprefix("Invalid JSON: ")
        return InvalidRequest("invalid_json", f"The body is not valid JSON: {detail}.")
    if param is None and error["type"] in _NOT_AN_OBJECT:
        return InvalidRequest("invalid_body", "The body must be a JSON object.")
    if error["type"] in _MISSING:
        return InvalidRequest(
            "parameter_missing", f"Missing required parameter: {param}.", param=param
        )
    if error["type"] in _EXTRA:
        return InvalidRequest("parameter_unknown", f"Unknown parameter: {param}.", param=param)
    if param is None:  # a rule across fields
        return InvalidRequest("parameter_invalid", f"Invalid request: {message}.")
    return InvalidRequest("parameter_invalid", f"Invalid {param}: {message}.", param=param)


async def read_json(request: Request, model: type[M]) -> M:
    """Parse the body as a JSON object and validate it as ``model``.

    Raises :class:`InvalidRequest` (``invalid_json``, ``invalid_body``, ``parameter_missing``,
    ``parameter_unknown``, ``parameter_invalid``) or :class:`RequestTooLarge`.
    """
    raw = await read_body(request)
    try:
        return model.model_validate_json(_utf8(raw))
    except ValidationError as exc:
        raise _invalid(exc) from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            "invalid_json", f"The body is not valid JSON: not {exc.encoding} text."
        ) from None
    except (RecursionError, ValueError):  # pydantic reports JSON faults itself; a last guard
        raise InvalidRequest("invalid_json", "The body is not valid JSON.") from None
