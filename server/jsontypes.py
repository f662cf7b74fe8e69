"""Request field types whose JSON Schema says exactly what pydantic enforces, no more, no less.

The OpenAPI document is generated from the request models, so a client (or schemathesis) that
sends what the schema allows must never get a 400, and the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

__all__ = [
    "NONBLANK",
    "NONBLANK_MESSAGE",
    "NUL_FREE",
    "VISIBLE",
    "JsonInt",
    "never_null",
    "not_null",
    "nul_free",
]

# Explicit escapes only: pydantic (Rust regex), JSON Schema validators (ECMA 262) and Python's
# re read those alike, while classes such as \s differ between them.

NONBLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A character that is not white space by Python's ``str.isspace`` (what ``str.strip`` removes)."""

NONBLANK_MESSAGE = "must contain a character that is not white space"

VISIBLE = re.compile(NONBLANK)
""":data:`NONBLANK` compiled; ``VISIBLE.search(text)`` is true iff ``text.strip()`` is not empty."""


def _integral(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]
"""A JSON Schema ``integer``: ``10`` or ``10.0`` (JSON Schema counts both); not ``"10"`` or ``true``.

Use in strict models, which reject ``10.0`` for a plain ``int``.
"""


def nul_free(value: str) -> str:
    """``value`` with NUL made U+FFFD: PostgreSQL text cannot hold NUL, and the schema allows it."""
    return value.replace("\x00", "\ufffd")


NUL_FREE = AfterValidator(nul_free)
"""For stored strings: JSON allows ``\u0000``, so it is accepted and stored as U+FFFD."""


def never_null(*names: str) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` for fields that may be left out but are never null: their
    ``anyOf [..., null]`` becomes the one non-null branch (pair it with :func:`not_null`)."""

    def edit(schema: dict[str, Any]) -> None:
        for name in names:
            field = schema["properties"][name]
            [kept] = [branch for branch in field.pop("anyOf") if branch != {"type": "null"}]
            field.pop("default", None)
            field.update(kept)

    return edit


def not_null(value: object) -> object:
    """A before-validator: null is refused (leave the field out instead)."""
    if value is None:
        raise ValueError("must not be null; leave the field out instead")
    return value
