"""What binds a wallet payment to an account, and its ledger reference (pure)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.billing.pricing import DEFAULT_PRICES, PURCHASE_KEY, PriceOverride, price_table
from server.billing.purchases import (
    PURCHASE_PATH,
    Binding,
    binding_from_resource,
    binding_query,
    purchase_reference,
)
from server.http.wallet import sent_authorization
from server.ids import new_id
from server.settings import load_settings

HEX = "0123456789abcdef"
_users = st.builds(lambda t: new_id("usr", now=t), st.floats(0, 2**40, allow_nan=False))
_packs = st.integers(1, 1_000_000)


@given(_users, _packs, st.sampled_from(["", "/svc", "/a/b"]))
def test_the_gate_record_names_the_account_and_pack(user: str, pack: int, root: str) -> None:
    binding = Binding(user, pack)
    resource = f"POST {root}{PURCHASE_PATH}?{binding_query(binding).decode()}"
    assert binding_from_resource(resource) == binding


@pytest.mark.parametrize(
    "resource",
    [
        f"GET {PURCHASE_PATH}?account=usr_01JF0000000000000000000000&credits=1",
        "POST /api/x402/v1/email/validate?account=usr_01JF0000000000000000000000&credits=1",
        f"POST {PURCHASE_PATH}",
        f"POST {PURCHASE_PATH}?account=usr_01JF0000000000000000000000&credits=0",
        f"POST {PURCHASE_PATH}?account=usr_01JF0000000000000000000000&credits=1&x=1",
        f"POST {PURCHASE_PATH}?account=key_01JF0000000000000000000000&credits=1",
        f"POST {PURCHASE_PATH}?credits=1&account=usr_01JF0000000000000000000000",
        "",
        "POST",
    ],
)
def test_anything_else_is_not_a_purchase(resource: str) -> None:
    assert binding_from_resource(resource) is None


@given(st.text(max_size=300))
def test_hostile_resources_never_raise(resource: str) -> None:
    found = binding_from_resource(resource)
    assert found is None or found.credits >= 1


_hex = st.text(HEX, min_size=1, max_size=64).map(lambda h: "0x" + h)


@given(_hex, _hex, _hex)
def test_the_reference_is_case_blind_and_distinct(asset: str, payer: str, nonce: str) -> None:
    ref = purchase_reference("eip155:8453", asset.upper().replace("0X", "0x"), payer, nonce)
    assert ref == purchase_reference("eip155:8453", asset, payer.upper().replace("0X", "0x"), nonce)
    assert ref != purchase_reference("eip155:1", asset, payer, nonce)
    assert ref != purchase_reference("eip155:8453", asset, payer, nonce + "0")


@pytest.mark.parametrize(
    ("network", "asset", "payer", "nonce"),
    [
        ("", "0xaa", "0xbb", "0xcc"),
        ("eip155:1", "aa", "0xbb", "0xcc"),
        ("eip155:1", "0xaa", "0xbb:0xcc", "0xcc"),
        ("eip155:1", "0xaa", "0xbb", "nonce"),
    ],
)
def test_a_reference_needs_an_authorization(
    network: str, asset: str, payer: str, nonce: str
) -> None:
    with pytest.raises(ValueError, match="not an EIP-3009 authorization"):
        purchase_reference(network, asset, payer, nonce)


def test_the_purchase_price_sells_a_pack() -> None:
    price = DEFAULT_PRICES[PURCHASE_KEY]
    assert (price.usd, price.credits, price.unit) == (Decimal("1.00"), 100, "purchase")
    changed = price_table({PURCHASE_KEY: PriceOverride(usd=Decimal("5"), credits=600)})
    assert (changed[PURCHASE_KEY].usd, changed[PURCHASE_KEY].credits) == (Decimal("5"), 600)
    with pytest.raises(ValueError, match="at least 1 credit"):
        price_table({PURCHASE_KEY: PriceOverride(credits=0)})


def _header(payload: object) -> bytes:
    return base64.b64encode(json.dumps(payload).encode())


def test_the_payment_read_is_the_one_the_gate_reads() -> None:
    settings = load_settings(env_file=None, network="eip155:31337", asset="0x" + "ab" * 20)
    auth = {
        "from": "0x" + "11" * 20,
        "to": "0x" + "22" * 20,
        "value": "1",
        "validAfter": "0",
        "validBefore": "9",
        "nonce": "0x" + "33" * 32,
    }
    good = _header(
        {
            "x402Version": 1,
            "scheme": "exact",
            "network": "anvil",
            "payload": {"signature": "0x", "authorization": auth},
        }
    )
    other = _header(
        {
            "x402Version": 1,
            "scheme": "exact",
            "network": "anvil",
            "payload": {"signature": "0x", "authorization": {**auth, "nonce": "0x" + "44" * 32}},
        }
    )
    found = sent_authorization([(b"payment-signature", good), (b"x-payment", other)], settings)
    assert found is not None
    reference, payer, nonce = found
    assert (payer, nonce) == (auth["from"], auth["nonce"])
    assert reference.endswith(":" + auth["nonce"])
    second = sent_authorization([(b"x-payment", other)], settings)
    assert second is not None
    assert second[2] == "0x" + "44" * 32
    # PAYMENT-SIGNATURE wins even when unreadable (so does the gate): no reference then.
    assert (
        sent_authorization([(b"payment-signature", b"!!"), (b"x-payment", other)], settings) is None
    )
    for hostile in (
        b"",
        b"e30=",
        _header([1]),
        _header({"payload": {"authorization": 5}}),
        b"\xff" * 9,
    ):
        assert sent_authorization([(b"x-payment", hostile)], settings) is None
    assert sent_authorization([], settings) is None
