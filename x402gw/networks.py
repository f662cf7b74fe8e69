"""EVM networks (v1 names <-> CAIP-2), known USDC assets, and exact price -> atomic unit conversion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import Final

from x402gw.errors import InvalidPrice, UnknownAsset, UnknownNetwork

_CAIP2_EVM = re.compile(r"eip155:([1-9][0-9]{0,19})")
_MONEY = re.compile(r"\$?\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_MAX_UINT256: Final = 2**256 - 1

# Legacy (x402 v1) network names and their chain ids, as the official SDK knows them.
_V1_NAMES: Final[dict[str, int]] = {
    "base": 8453,
    "base-sepolia": 84532,
    "ethereum": 1,
    "polygon": 137,
    "polygon-amoy": 80002,
    "avalanche": 43114,
    "avalanche-fuji": 43113,
    "abstract": 2741,
    "abstract-testnet": 11124,
    "iotex": 4689,
    "sei": 1329,
    "sei-testnet": 1328,
    "peaq": 3338,
    "story": 1513,
    "educhain": 656476,
    "skale-base-sepolia": 1444673419,
    "megaeth": 4326,
    "monad": 143,
    "monad-testnet": 10143,
    "stable": 988,
    "stable-testnet": 2201,
    "celo": 42220,
    "flare": 14,
}


@dataclass(frozen=True, slots=True)
class Asset:
    """An EIP-3009 token on one network, with the EIP-712 domain its signatures use."""

    network: str  # CAIP-2
    address: str
    name: str
    version: str
    decimals: int = 6
    symbol: str = "USDC"

    @property
    def extra(self) -> dict[str, str]:
        """The ``extra`` object of a payment requirement for this asset."""
        return {"name": self.name, "version": self.version}


_DEFAULT_ASSETS: Final = (
    Asset("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"),
    Asset("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2"),
)


class NetworkRegistry:
    """Bidirectional map of legacy names to chain ids, plus the default asset per network."""

    def __init__(self) -> None:
        self._by_name: dict[str, int] = dict(_V1_NAMES)
        self._by_chain: dict[int, str] = {cid: name for name, cid in _V1_NAMES.items()}
        self._assets: dict[str, Asset] = {a.network: a for a in _DEFAULT_ASSETS}

    def register(self, chain_id: int, v1_name: str | None = None) -> str:
        """Add a custom chain (e.g. anvil's 31337), optionally with a v1 name; returns its CAIP-2 id."""
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
            raise UnknownNetwork(f"chain id must be a positive int, got {chain_id!r}")
        if v1_name is not None:
            known = self._by_name.get(v1_name)
            if known is not None and known != chain_id:
                raise UnknownNetwork(f"v1 name {v1_name!r} already maps to chain {known}")
            self._by_name[v1_name] = chain_id
            self._by_chain[chain_id] = v1_name
        return f"eip155:{chain_id}"

    def register_asset(self, asset: Asset) -> None:
        """Make ``asset`` the default asset of its network (replacing any previous one)."""
        self.chain_id(asset.network)
        self._assets[asset.network] = asset

    def chain_id(self, network: str) -> int:
        """Chain id of a CAIP-2 ``eip155:<id>`` string or a registered v1 name."""
        match = _CAIP2_EVM.fullmatch(network)
        if match:
            return int(match.group(1))
        if network in self._by_name:
            return self._by_name[network]
        raise UnknownNetwork(f"unknown EVM network {network!r}")

    def to_caip2(self, network: str) -> str:
        """CAIP-2 form of a v1 name (CAIP-2 input is validated and returned as is)."""
        return f"eip155:{self.chain_id(network)}"

    def to_v1(self, network: str) -> str:
        """Legacy v1 name of a CAIP-2 id (a registered v1 name is returned as is)."""
        if network in self._by_name:
            return network
        name = self._by_chain.get(self.chain_id(network))
        if name is None:
            raise UnknownNetwork(f"no v1 name registered for {network!r}")
        return name

    def default_asset(self, network: str) -> Asset:
        """The default (USDC-like) asset of a network, given as CAIP-2 or v1 name."""
        caip2 = self.to_caip2(network)
        asset = self._assets.get(caip2)
        if asset is None:
            raise UnknownAsset(f"no asset registered for {caip2}")
        return asset

    def find_asset(self, network: str, address: str) -> Asset:
        """The registered asset at ``address`` on ``network`` (address compared case-insensitively)."""
        asset = self.default_asset(network)
        if asset.address.lower() != address.lower():
            raise UnknownAsset(f"{address} is not a registered asset on {asset.network}")
        return asset


NETWORKS: Final = NetworkRegistry()
"""The process-wide registry; tests and apps register custom chains on it or build their own."""


def to_atomic(price: str | int | Decimal, decimals: int = 6) -> int:
    """Exact atomic units of a price: ``int`` is already atomic; ``"$0.003"``/``"0.003"``/Decimal are token units.

    Floats are refused (they cannot represent most cents exactly); so are negatives, NaN/infinity,
    and amounts with more fractional digits than ``decimals``.
    """
    if isinstance(price, bool) or not isinstance(price, str | int | Decimal):
        raise InvalidPrice(f"price must be str, int or Decimal, got {type(price).__name__}")
    if not 0 <= decimals <= 77:
        raise InvalidPrice(f"decimals out of range: {decimals}")
    if isinstance(price, int):
        atomic = price
    else:
        amount = _parse_money(price) if isinstance(price, str) else price
        if not amount.is_finite():
            raise InvalidPrice(f"price must be finite, got {price!r}")
        if amount < 0:
            raise InvalidPrice(f"price must not be negative, got {price!r}")
        if amount and amount.adjusted() + decimals > 78:
            raise InvalidPrice(f"price {price!r} exceeds uint256")
        with localcontext() as ctx:
            ctx.prec = 200  # exact for anything that fits a uint256
            scaled = amount.scaleb(decimals)
            if scaled != scaled.to_integral_value():
                raise InvalidPrice(f"{price!r} has more than {decimals} decimal places")
            atomic = int(scaled)
    if atomic < 0:
        raise InvalidPrice(f"price must not be negative, got {price!r}")
    if atomic > _MAX_UINT256:
        raise InvalidPrice(f"price {price!r} exceeds uint256")
    return atomic


def from_atomic(atomic: int, decimals: int = 6) -> Decimal:
    """Token units of an atomic amount (exact), e.g. 3000 -> Decimal("0.003") for 6 decimals."""
    with localcontext() as ctx:
        ctx.prec = 200  # the default 28 digits would round large amounts
        return Decimal(atomic).scaleb(-decimals).normalize()


def _parse_money(text: str) -> Decimal:
    match = _MONEY.fullmatch(text.strip())
    if not match:
        raise InvalidPrice(f"not a price: {text!r}")
    try:
        return Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise InvalidPrice(f"not a price: {text!r}") from exc
