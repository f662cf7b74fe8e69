"""Idempotency-Key decisions (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.http.idempotency_rules import (
    IN_FLIGHT_TIMEOUT,
    TTL_SECONDS,
    Decision,
    Stored,
    decide,
    fingerprint,
    valid_key,
)

FP = fingerprint("POST", "/api/v1/x", b"{}")


@pytest.mark.parametrize(
    ("stored", "fp", "age", "decision"),
    [
        (None, FP, 0, Decision.RUN),
        (Stored(FP, 0.0, finished=True), FP, 10, Decision.REPLAY),
        (Stored(FP, 0.0, finished=False), FP, 10, Decision.IN_FLIGHT),
        (Stored(FP, 0.0, finished=False), FP, IN_FLIGHT_TIMEOUT, Decision.RUN),
        (Stored("other", 0.0, finished=True), FP, 10, Decision.MISMATCH),
        (Stored("other", 0.0, finished=False), FP, 10, Decision.MISMATCH),
        (Stored(FP, 0.0, finished=True), FP, TTL_SECONDS, Decision.RUN),
        (Stored("other", 0.0, finished=True), FP, TTL_SECONDS + 1, Decision.RUN),
    ],
)
def test_decision_table(stored: Stored | None, fp: str, age: float, decision: Decision) -> None:
    assert decide(stored, fp, age) is decision


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_fingerprint_separates_fields(a: bytes, b: bytes) -> None:
    assert (fingerprint("POST", "/p", a) == fingerprint("POST", "/p", b)) == (a == b)
    assert fingerprint("POST", "/p", a) != fingerprint("PUT", "/p", a)
    assert fingerprint("POST", "/p" + "x", a) != fingerprint("POST", "/p", b"x" + a)


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("abc", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("", False),
        ("has space", False),
        ("é", False),
        ("a\nb", False),
    ],
)
def test_key_format(key: str, ok: bool) -> None:
    assert valid_key(key) is ok
