"""A lead's A/B variant of a step (pure): a weighted pick that depends only on the lead id and
the step position, so every tick, process and retry picks the same variant for the same lead."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["pick", "weight_of"]


def weight_of(variant: Mapping[str, Any]) -> int:
    """A variant's weight: a non-negative int (default 1; anything else counts as 0)."""
    value = variant.get("weight", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def pick(lead_id: str, position: int, variants: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The variant of step ``position`` for ``lead_id`` (weighted; all zero: the first)."""
    if not variants:
        raise ValueError("a step without variants")
    weights = [weight_of(v) for v in variants]
    total = sum(weights)
    if total == 0:
        return variants[0]
    digest = hashlib.sha256(f"{lead_id}\x00{position}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant, weight in zip(variants, weights, strict=True):
        if point < weight:
            return variant
        point -= weight
    raise AssertionError("unreachable")  # pragma: no cover
