"""Network name mapping, asset table and exact price conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS

from x402gw.errors import InvalidPrice, UnknownAsset, UnknownNetwork
from x402gw.networks import Asset, NetworkRegistry, from_atomic, to_atomic


@pytest.fixture
def registry() -> NetworkRegistry:
    return NetworkRegistry()


def test_base_names_map_both_ways(registry: NetworkRegistry) -> None:
    assert registry.to_caip2("base") == "eip155:8453"
    assert registry.to_caip2("base-sepolia") == "eip155:84532"
    assert registry.to_v1("eip155:8453") == "base"
    assert registry.to_v1("eip155:84532") == "base-sepolia"
    assert registry.to_v1("base") == "base"
    assert registry.to_caip2("eip155:8453") == "eip155:8453"


def test_v1_table_agrees_with_the_sdk(registry: NetworkRegistry) -> None:
    for name, chain_id in V1_NETWORK_CHAIN_IDS.items():
        assert registry.chain_id(name) == chain_id
        assert registry.to_v1(f"eip155:{chain_id}") == name


def test_custom_chain_registration(registry: NetworkRegistry) -> None:
    assert registry.chain_id("eip155:31337") == 31337  # any CAIP-2 EVM id parses
    with pytest.raises(UnknownNetwork):
        registry.to_v1("eip155:31337")
    assert registry.register(31337, "anvil") == "eip155:31337"
    assert registry.to_v1("eip155:31337") == "anvil"
    assert registry.to_caip2("anvil") == "eip155:31337"
    assert registry.register(31337, "anvil") == "eip155:31337"  # idempotent


@pytest.mark.parametrize("bad", [0, -1, True])
def test_register_rejects_bad_chain_ids(registry: NetworkRegistry, bad: int) -> None:
    with pytest.raises(UnknownNetwork):
        registry.register(bad)


def test_register_refuses_to_rebind_a_name(registry: NetworkRegistry) -> None:
    with pytest.raises(UnknownNetwork):
        registry.register(999, "base")


@pytest.mark.parametrize(
    "bad", ["solana", "eip155:", "eip155:0", "eip155:abc", "eip155:08453", "BASE", ""]
)
def test_unknown_networks_raise(registry: NetworkRegistry, bad: str) -> None:
    with pytest.raises(UnknownNetwork):
        registry.chain_id(bad)


def test_usdc_assets(registry: NetworkRegistry) -> None:
    base = registry.default_asset("base")
    assert (base.address, base.name, base.version, base.decimals) == (
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "USD Coin",
        "2",
        6,
    )
    sepolia = registry.default_asset("eip155:84532")
    assert (sepolia.address, sepolia.name, sepolia.version) == (
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "USDC",
        "2",
    )
    assert sepolia.extra == {"name": "USDC", "version": "2"}
    assert registry.find_asset("base", base.address.lower()) == base
    with pytest.raises(UnknownAsset):
        registry.find_asset("base", sepolia.address)
    with pytest.raises(UnknownAsset):
        registry.default_asset("polygon")


def test_register_asset(registry: NetworkRegistry) -> None:
    token = Asset("eip155:31337", "0x5FbDB2315678afecb367f032d93F642f64180aa3", "USD Coin", "2")
    registry.register_asset(token)
    assert registry.default_asset("eip155:31337") == token
    with pytest.raises(UnknownNetwork):
        registry.register_asset(Asset("solana:x", token.address, "x", "1"))


@pytest.mark.parametrize(
    ("price", "atomic"),
    [
        ("$0.003", 3000),
        ("0.003", 3000),
        ("$1", 1_000_000),
        (" $ 0.01 ", 10_000),
        (".5", 500_000),
        ("0.000001", 1),
        ("12.", 12_000_000),
        (Decimal("0.003"), 3000),
        (Decimal("1E-6"), 1),
        (Decimal("0.0030000"), 3000),
        (3000, 3000),
        (0, 0),
    ],
)
def test_prices_to_atomic(price: str | int | Decimal, atomic: int) -> None:
    assert to_atomic(price) == atomic


@pytest.mark.parametrize(
    "price",
    [
        "-0.01",
        "$-1",
        "0.0000001",
        Decimal("0.0000001"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-1"),
        -1,
        "abc",
        "",
        "1e3",
        "$",
        "0x10",
        0.01,
        True,
        None,
        2**256,
        Decimal("1E+80"),
    ],
)
def test_bad_prices_raise(price: object) -> None:
    with pytest.raises(InvalidPrice):
        to_atomic(price)  # type: ignore[arg-type]


def test_decimals_parameter() -> None:
    assert to_atomic("1", decimals=18) == 10**18
    assert to_atomic("7", decimals=0) == 7
    with pytest.raises(InvalidPrice):
        to_atomic("1.5", decimals=0)
    with pytest.raises(InvalidPrice):
        to_atomic("1", decimals=-1)


@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=0, max_value=18))
def test_atomic_round_trips_through_decimal_and_string(atomic: int, decimals: int) -> None:
    amount = from_atomic(atomic, decimals)
    assert to_atomic(amount, decimals) == atomic
    assert to_atomic(format(amount, "f"), decimals) == atomic
    assert to_atomic("$" + format(amount, "f"), decimals) == atomic


@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=0, max_value=12))
def test_one_digit_too_many_is_refused(units: int, decimals: int) -> None:
    finer = Decimal(units * 10 + 1).scaleb(-(decimals + 1))
    with pytest.raises(InvalidPrice):
        to_atomic(finer, decimals)
