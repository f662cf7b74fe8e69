"""Route pricing for the payment middleware: method + path pattern -> what to charge and where."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from x402gw.errors import InvalidPrice, UnknownNetwork, X402Error
from x402gw.networks import NETWORKS, Asset, NetworkRegistry, to_atomic
from x402gw.wire import MAX_HEADER_BYTES, PaymentRequirements, PaymentRequirementsV1

if TYPE_CHECKING:
    from x402gw.chain import ChainClient
    from x402gw.facilitator import Facilitator
    from x402gw.ledger import Ledger

_METHOD = re.compile(r"[A-Z]{1,20}|\*")
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
MIN_TIMEOUT_SECONDS: Final = 7  # the SDK facilitator wants validBefore >= now + 6
DEFAULT_HANDLER_TIMEOUT: Final = 30.0
DEFAULT_SETTLE_WINDOW: Final = 20.0  # validBefore >= now + 6 at the settle re-check, plus slack
DEFAULT_MAX_BODY: Final = 1024 * 1024

ErrorRenderer = Callable[
    [Mapping[str, Any], int, str, str, Mapping[str, Any] | None],
    tuple[list[tuple[bytes, bytes]], bytes],
]
"""``render(scope, status, code, message, x402_body)`` -> (headers, body) of a gate refusal.

``x402_body`` is the x402 v1 ``PaymentRequired`` JSON of a 402 challenge (None for other errors):
a renderer keeps its fields as they are (v1 clients read them) and may add its own beside them.
The gate adds its own headers (``PAYMENT-REQUIRED``, ``Cache-Control: no-store``, CORS) after.
"""


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


class RateLimiter(Protocol):
    """Counts requests per key; the gate asks it for ``ip:<client address>`` before anything
    else and for ``payer:<address>`` once a payment's signature checks out offline."""

    async def hit(self, key: str) -> float | None:
        """Count one request for ``key``: None when allowed, else seconds until one would be.

        Raise nothing for a backend failure: fail open (and log), or the gate would refuse
        every paying client while a rate-limit store is down.
        """
        ...


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
    # Seconds the handler may run (then it is cancelled: 504, not charged). A payment must stay
    # valid for this plus the settlement window, so work is never done for money that has expired.
    handler_timeout: float = DEFAULT_HANDLER_TIMEOUT
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
        if (
            isinstance(self.handler_timeout, bool)
            or not isinstance(self.handler_timeout, int | float)
            or not 0 < self.handler_timeout < self.max_timeout_seconds
        ):
            raise InvalidRouteConfig(
                f"handler_timeout must be above 0 and below max_timeout_seconds, "
                f"got {self.handler_timeout!r}"
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
        return (self.method in ("*", method)) and self.matches_path(path)

    def matches_path(self, path: str) -> bool:
        """Does this route's path pattern match ``path`` (any method)?"""
        return self._regex.fullmatch(path) is not None

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
    # Paid request bodies are read to fingerprint them: refused beyond this by Content-Length or
    # by streamed size, and only after the payment header passed its offline checks.
    max_request_body_bytes: int = DEFAULT_MAX_BODY
    max_header_bytes: int = MAX_HEADER_BYTES
    declare_payment_identifier: bool = True
    reconcile_on_startup: bool = True
    # Seconds a payment must stay valid after its handler's deadline (the settlement re-checks
    # validBefore >= now + 6 before it broadcasts, and waits for a block).
    settle_window_seconds: float = DEFAULT_SETTLE_WINDOW
    # "deny": a request that reaches the gate without matching a priced route is refused (404 or
    # 405), never passed through unpaid; for a gate wrapping an application whose routes are
    # all priced. "pass": unmatched requests go to the application (a gate around a whole site).
    unmatched: Literal["pass", "deny"] = "pass"
    # Seconds between background passes that reconcile `settling` records from the chain and
    # release `verified` reservations left by a crash; None turns the task off.
    maintenance_interval: float | None = 30.0
    render_error: ErrorRenderer | None = None
    rate_limiter: RateLimiter | None = None
    # Where reconcile and the in-flight balance check read the chain when the facilitator is
    # remote (a LocalFacilitator's own client is used otherwise). Without one, a remote setup
    # cannot reconcile pending settlements and allows one payment in flight per payer.
    reconcile_client: ChainClient | None = None

    def __post_init__(self) -> None:
        if not self.routes:
            raise InvalidRouteConfig("at least one priced route is needed")
        for cap in (self.max_response_bytes, self.max_request_body_bytes, self.max_header_bytes):
            if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
                raise InvalidRouteConfig(f"size caps must be positive ints, got {cap!r}")
        if self.unmatched not in ("pass", "deny"):
            raise InvalidRouteConfig(f"unmatched must be 'pass' or 'deny', got {self.unmatched!r}")
        window = self.settle_window_seconds
        if isinstance(window, bool) or not isinstance(window, int | float) or not window >= 6:
            raise InvalidRouteConfig(f"settle_window_seconds must be >= 6, got {window!r}")
        interval = self.maintenance_interval
        if interval is not None and (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf
        ):
            raise InvalidRouteConfig(f"maintenance_interval must be > 0 or None, got {interval!r}")
        for route in self.routes:
            if route.handler_timeout + window > route.max_timeout_seconds:
                raise InvalidRouteConfig(
                    f"route {route.method} {route.path}: handler_timeout + settle_window_seconds "
                    f"({route.handler_timeout} + {window}) exceeds max_timeout_seconds "
                    f"({route.max_timeout_seconds}): no payment could cover it"
                )

    def stale_after_seconds(self) -> float:
        """Age after which a `verified` reservation can only be a crashed process's leftover."""
        longest = max(route.handler_timeout for route in self.routes)
        return longest + self.settle_window_seconds + 60.0

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
            rpc_url,
            operator_key,
            networks.pop(),
            signer_lock=lock,
            allowed_payments={(route.token.address, route.pay_to) for route in routes},
        )
        return cls(routes=routes, facilitator=facilitator, ledger=Ledger(ledger_url), **options)

    def route_for(self, method: str, path: str) -> PricedRoute | None:
        """The first route pricing ``method path``, or None (free).

        ``path`` is the path the application routes on: the request path without the ASGI
        ``root_path`` (see :func:`x402gw._flow.route_path`).
        """
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

    def path_is_priced(self, path: str) -> bool:
        """Does any route's pattern match ``path``, whatever the method?"""
        return any(route.matches_path(path) for route in self.routes)
