"""Webhook rules (pure): the retry schedule, the delivery states, endpoint health, and the
destination rule for URLs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.webhooks.destination import DestinationError, parse_url
from server.webhooks.rules import (
    DISABLE_AFTER,
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    DeliveryState,
    after_attempt,
    endpoint_after,
    is_success,
)


def test_success_is_2xx_only() -> None:
    assert [is_success(s) for s in (None, 199, 200, 204, 299, 300, 301, 410, 500)] == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


@given(st.integers(1, 50), st.booleans(), st.floats(0, 1e10))
def test_after_attempt_is_total_and_bounded(attempts: int, ok: bool, now: float) -> None:
    state, next_at = after_attempt(attempts, ok, now)
    if ok:
        assert (state, next_at) == (DeliveryState.DELIVERED, None)
    elif attempts >= MAX_ATTEMPTS:
        assert (state, next_at) == (DeliveryState.FAILED, None)
    else:
        assert state is DeliveryState.PENDING
        assert next_at == now + RETRY_DELAYS[attempts - 1]


def test_schedule_ends_after_max_attempts() -> None:
    now, attempts, state = 0.0, 0, DeliveryState.PENDING
    while state is DeliveryState.PENDING:
        attempts += 1
        state, next_at = after_attempt(attempts, False, now)
        now = next_at if next_at is not None else now
    assert (state, attempts) == (DeliveryState.FAILED, MAX_ATTEMPTS)
    assert now == sum(RETRY_DELAYS)
    with pytest.raises(ValueError, match="from 1"):
        after_attempt(0, True, 0.0)


@given(st.lists(st.sampled_from(list(DeliveryState)), max_size=40))
def test_endpoint_disabled_exactly_after_consecutive_failures(states: list[DeliveryState]) -> None:
    count, run = 0, 0
    for state in states:
        count, disable = endpoint_after(count, state)
        if state is DeliveryState.DELIVERED:
            run = 0
        elif state is DeliveryState.FAILED:
            run += 1
        assert count == run
        assert disable == (state is DeliveryState.FAILED and run >= DISABLE_AFTER)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/x", "url_scheme"),
        ("ftp://hooks.example.com/x", "url_scheme"),
        ("https://user:pw@hooks.example.com/x", "url_credentials"),
        ("https:///nohost", "url_invalid"),
        ("https://hooks.example.com:99999/x", "url_invalid"),
        ("https://hooks.example.com/a b", "url_invalid"),
        ("https://hooks.example.com/\x00", "url_invalid"),
        ("https://" + "a" * 2050 + ".com/", "url_too_long"),
        ("https://localhost/x", "destination_forbidden"),
        ("https://api.localhost/x", "destination_forbidden"),
        ("https://metadata.google.internal/x", "destination_forbidden"),
        ("https://intranet/x", "destination_forbidden"),
        ("https://127.0.0.1/x", "destination_forbidden"),
        ("https://10.1.2.3/x", "destination_forbidden"),
        ("https://169.254.169.254/latest/meta-data", "destination_forbidden"),
        ("https://[::1]/x", "destination_forbidden"),
        ("https://[::ffff:127.0.0.1]/x", "destination_forbidden"),
        ("https://[fe80::1]/x", "destination_forbidden"),
        ("https://100.64.0.1/x", "destination_forbidden"),
    ],
)
def test_refused_urls(url: str, code: str) -> None:
    with pytest.raises(DestinationError) as caught:
        parse_url(url)
    assert caught.value.code == code


def test_accepted_url_keeps_port_path_and_query() -> None:
    dest = parse_url("https://Hooks.Example.COM:8443/in/bavlio?x=1")
    assert (dest.scheme, dest.host, dest.port, dest.target) == (
        "https",
        "hooks.example.com",
        8443,
        "/in/bavlio?x=1",
    )
    assert dest.host_header == "hooks.example.com:8443"
    assert dest.url_for("93.184.215.14") == "https://93.184.215.14:8443/in/bavlio?x=1"
    assert dest.url_for("2606:2800::1") == "https://[2606:2800::1]:8443/in/bavlio?x=1"
    plain = parse_url("https://hooks.example.com")
    assert (plain.port, plain.target, plain.host_header) == (443, "/", "hooks.example.com")
    idn = parse_url("https://bücher.example/x")
    assert idn.host == "xn--bcher-kva.example"


def test_labs_may_allow_http_and_private() -> None:
    dest = parse_url("http://127.0.0.1:8080/hook", allow_http=True, allow_private=True)
    assert (dest.host, dest.port, dest.host_header) == ("127.0.0.1", 8080, "127.0.0.1:8080")


@given(st.text(max_size=300))
def test_parse_url_raises_only_its_error(text: str) -> None:
    with contextlib.suppress(DestinationError):
        parse_url(text)
