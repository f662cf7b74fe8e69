"""Route pricing for the payment middleware: method + path pattern -> what to charge and where."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from x402gw.errors import InvalidPrice, UnknownNetwork, X402Error
from x402gw.networks import NETWORKS, Asset, NetworkRegistry, to_atomic
from x402gw.wire import MAX_HEADER_BYTES, PaymentRequirements, PaymentRequirementsV1

if TYPE_CHECKING:
    from x402gw.facilitator import Facilitator
    from x402gw.ledger import Ledger

_METHOD = re.compile(r"[A-Z]{1,20}|\*")
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
MIN_TIMEOUT_SECONDS: Final = 7  # the SDK facilitator wants validBefore >= now + 6


class InvalidRouteConfig(X402Error, ValueError):
    """A priced route whose method, path pattern, payee, timeout or price cannot work."""


def compile_path(pattern: str) -> re.Pattern[str]:
    """``/items/{id}`` matches one segment per ``{name}``; a trailing ``*`` matches any rest."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise InvalidRouteConfig(f"path pattern must start with '/': {pattern!r}")
    if "*" in pattern[:-1]:
        raise InvalidRouteConfig(f"'*' is allowed only at the end of a pattern: {pattern!r}")
    body, wildcard = (pattern[:-1], True) if pattern.endswith("*") else (pattern, False)
    out, pos = [], 0
    for match in _PARAM.finditer(body):
        out.append(re.escape(body[pos : match.start()]))
        out.append("[^/]+")
        pos = match.end()
    out.append(re.escape(body[pos:]))
    if wildcard:
        out.append(".*")
    return re.compile("".join(out))


@dataclass(frozen=True, slots=True)
class PricedRoute:
    """One paid route: ``price`` is ``"$0.01"``/Decimal (token units) or an int (atomic units)."""

    method: str
    path: str
    price: str | int | Decimal
    pay_to: str
    network: str
    asset: Asset | None = None  # None: the network's registered default asset
    description: str = ""
    mime_type: str = "application/json"
    upfront: bool = False  # settle before running the handler (costly side effects)
    max_timeout_seconds: int = 300
    networks: NetworkRegistry = field(default=NETWORKS, repr=False, compare=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _asset: Asset = field(init=False, repr=False, compare=False)
    _amount: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        method = self.method.upper() if isinstance(self.method, str) else ""
        if not _METHOD.fullmatch(method):
            raise InvalidRouteConfig(f"bad HTTP method {self.method!r}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "_regex", compile_path(self.path))
        if not isinstance(self.pay_to, str) or not _ADDRESS.fullmatch(self.pay_to):
            raise InvalidRouteConfig(f"pay_to is not an EVM address: {self.pay_to!r}")
        if (
            isinstance(self.max_timeout_seconds, bool)
            or not isinstance(self.max_timeout_seconds, int)
            or not MIN_TIMEOUT_SECONDS <= self.max_timeout_seconds <= 7 * 24 * 3600
        ):
            raise InvalidRouteConfig(
                f"max_timeout_seconds must be {MIN_TIMEOUT_SECONDS}..604800, "
                f"got {self.max_timeout_seconds!r}"
            )
        try:
            network = self.networks.to_caip2(self.network)
            asset = self.asset or self.networks.default_asset(network)
        except X402Error as exc:
            raise InvalidRouteConfig(f"route {method} {self.path}: {exc}") from exc
        if asset.network != network:
            raise InvalidRouteConfig(f"asset is on {asset.network}, route on {network}")
        try:
            amount = to_atomic(self.price, asset.decimals)
        except InvalidPrice as exc:
            raise InvalidRouteConfig(f"route {method} {self.path}: {exc}") from exc
        if amount == 0:
            raise InvalidRouteConfig(f"route {method} {self.path}: price must be above zero")
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "_asset", asset)
        object.__setattr__(self, "_amount", amount)

    @property
    def amount(self) -> int:
        """The price in atomic units."""
        return self._amount

    @property
    def token(self) -> Asset:
        """The asset paid with."""
        return self._asset

    def matches(self, method: str, path: str) -> bool:
        """Does this route price ``method path``? (``*`` as method prices every method.)"""
        return (self.method in ("*", method)) and self._regex.fullmatch(path) is not None

    def requirements(self) -> PaymentRequirements:
        """The v2 offer for this route."""
        return PaymentRequirements(
            scheme="exact",
            network=self.network,
            asset=self._asset.address,
            amount=str(self._amount),
            pay_to=self.pay_to,
            max_timeout_seconds=self.max_timeout_seconds,
            extra=self._asset.extra,
        )

    def requirements_v1(self, resource_url: str) -> PaymentRequirementsV1 | None:
        """The v1 offer, or None when the network has no legacy (v1) name."""
        try:
            name = self.networks.to_v1(self.network)
        except UnknownNetwork:
            return None
        return PaymentRequirementsV1(
            scheme="exact",
            network=name,
            max_amount_required=str(self._amount),
            resource=resource_url,
            description=self.description,
            mime_type=self.mime_type,
            pay_to=self.pay_to,
            max_timeout_seconds=self.max_timeout_seconds,
            asset=self._asset.address,
            extra=self._asset.extra,
        )


@dataclass(slots=True)
class PaymentConfig:
    """Everything the middleware needs: priced routes, a facilitator, a ledger, and size caps."""

    routes: Sequence[PricedRoute]
    facilitator: Facilitator
    ledger: Ledger
    networks: NetworkRegistry = NETWORKS
    max_response_bytes: int = 16 * 1024 * 1024  # buffered handler output beyond this is refused
    max_request_body_bytes: int = (
        4 * 1024 * 1024
    )  # paid request bodies are read to fingerprint them
    max_header_bytes: int = MAX_HEADER_BYTES
    declare_payment_identifier: bool = True
    reconcile_on_startup: bool = True

    def __post_init__(self) -> None:
        if not self.routes:
            raise InvalidRouteConfig("at least one priced route is needed")
        for cap in (self.max_response_bytes, self.max_request_body_bytes, self.max_header_bytes):
            if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
                raise InvalidRouteConfig(f"size caps must be positive ints, got {cap!r}")

    @classmethod
    def local(
        cls,
        routes: Sequence[PricedRoute],
        *,
        rpc_url: str,
        operator_key: str,
        ledger_url: str = "sqlite:///x402gw-ledger.sqlite3",
        signer_lock: str | None = None,
        **options: Any,
    ) -> PaymentConfig:
        """The default set-up: verify and settle in process (LocalFacilitator), SQLite ledger.

        ``signer_lock``: a file path shared by worker processes settling with the same key
        (see :class:`x402gw.signer_lock.FileSignerLock`).
        """
        from x402gw.facilitator import LocalFacilitator
        from x402gw.ledger import Ledger

        if not routes:
            raise InvalidRouteConfig("at least one priced route is needed")
        networks = {route.network for route in routes}
        if len(networks) != 1:
            raise InvalidRouteConfig(f"a local facilitator serves one chain, routes use {networks}")
        from x402gw.signer_lock import FileSignerLock

        lock = FileSignerLock(signer_lock) if signer_lock is not None else None
        facilitator = LocalFacilitator.from_rpc(
            rpc_url, operator_key, networks.pop(), signer_lock=lock
        )
        return cls(routes=routes, facilitator=facilitator, ledger=Ledger(ledger_url), **options)

    def route_for(self, method: str, path: str) -> PricedRoute | None:
        """The first route pricing ``method path``, or None (free)."""
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None
