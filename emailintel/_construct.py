"""Build frozen pydantic models from values already of their declared types, without validation.

``BaseModel.model_construct`` still walks every field with defaults and aliases; on the offline
validate path that costs more than the checks themselves. Callers pass every field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def construct(cls: type[M], **values: Any) -> M:
    """An instance of ``cls`` holding exactly ``values`` (which must name every field)."""
    obj = object.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def builder(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """A constructor for ``cls`` from one dict naming every field (which it keeps, not copies).

    For the hottest path: no keyword packing, and the fields-set copied from a prepared set.
    """
    fields = set(cls.model_fields)
    new = object.__new__

    def build(values: dict[str, Any]) -> M:
        obj = new(cls)
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", fields.copy())
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj

    return build
