"""The x402 payment gate of the paid routes, built from settings with x402gw.

``BAVLIO_SETTLER_KEY`` settles locally (x402gw's LocalFacilitator on ``BAVLIO_RPC_URL``);
``BAVLIO_FACILITATOR_URL`` delegates to a remote facilitator. The ledger shares the server's
database; ``BAVLIO_REDIS_URL`` adds Redis authorization locks for several processes.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.parsing import MAX_BODY
from server.errors import render_gate_error
from server.openapi import PaidRoute
from server.ratelimit import PaidRateLimiter, parse_limit
from server.routes import PAID_PREFIX
from server.settings import Settings, SettingsError
from x402gw.chain import ChainClient
from x402gw.config import PaymentConfig, PricedRoute
from x402gw.errors import UnknownNetwork
from x402gw.facilitator import HttpFacilitator, LocalFacilitator
from x402gw.ledger import Ledger
from x402gw.locks import RedisLocks
from x402gw.middleware import PaymentMiddleware
from x402gw.networks import Asset, NetworkRegistry

__all__ = ["LOCAL_V1_NAMES", "PaymentGate", "gate_factory", "network_registry", "payments_enabled"]

LOCAL_V1_NAMES = {31337: "anvil"}
"""Legacy (x402 v1) names for local chains, so their 402s carry the v1 JSON offer too."""


def payments_enabled(settings: Settings) -> bool:
    """True when a settler key or a facilitator URL is configured."""
    return settings.settler_key is not None or settings.facilitator_url is not None


def network_registry(settings: Settings) -> NetworkRegistry:
    """A registry knowing the configured network and its asset (custom chains included)."""
    registry = NetworkRegistry()
    chain_id = settings.chain_id
    if chain_id is None:
        raise SettingsError("BAVLIO_NETWORK", "payments need an EVM network (eip155:<chain id>)")
    try:
        registry.to_v1(settings.network)
    except UnknownNetwork:
        registry.register(chain_id, LOCAL_V1_NAMES.get(chain_id))
    registry.register_asset(
        Asset(
            settings.network,
            settings.asset,
            settings.asset_name,
            settings.asset_version,
            settings.asset_decimals,
        )
    )
    return registry


def _facilitator(
    settings: Settings, registry: NetworkRegistry
) -> LocalFacilitator | HttpFacilitator:
    if settings.facilitator_url is not None:
        if settings.rpc_url is None:
            raise SettingsError(
                "BAVLIO_RPC_URL",
                "a remote facilitator needs the chain's RPC URL too: pending settlements are "
                "reconciled from the chain",
            )
        token = settings.facilitator_token
        return HttpFacilitator(
            settings.facilitator_url,
            bearer_token=token.get_secret_value() if token is not None else None,
        )
    assert settings.settler_key is not None
    if settings.rpc_url is None:
        raise SettingsError("BAVLIO_RPC_URL", "a settler key needs the chain's RPC URL")
    assert settings.pay_to is not None
    return LocalFacilitator.from_rpc(
        settings.rpc_url,
        settings.settler_key.get_secret_value(),
        settings.network,
        networks=registry,
        # Settle only what this server sells: its asset, paid to its merchant address.
        allowed_payments=[(settings.asset, settings.pay_to)],
    )


class PaymentGate:
    """x402gw's middleware in front of the paid routes, owning its facilitator and ledger."""

    def __init__(self, app: ASGIApp, routes: tuple[PaidRoute, ...], settings: Settings) -> None:
        if settings.pay_to is None:
            raise SettingsError("BAVLIO_PAY_TO", "payments need the address that receives them")
        self.networks = network_registry(settings)
        self.facilitator = _facilitator(settings, self.networks)
        # With a remote facilitator, the chain is still read here (when an RPC URL is given) to
        # reconcile pending settlements and check a payer's balance against payments in flight.
        self.chain = (
            ChainClient(settings.rpc_url)
            if isinstance(self.facilitator, HttpFacilitator) and settings.rpc_url is not None
            else None
        )
        self.locks = RedisLocks.from_url(settings.redis_url) if settings.redis_url else None
        self.ledger = Ledger(
            settings.database_url, schema=settings.database_schema, locks=self.locks
        )
        asset = self.networks.default_asset(settings.network)
        # The gate wraps the paid mount, whose router matches paths below PAID_PREFIX: price
        # those same paths, and refuse whatever reaches the mount without matching one. The
        # wallet-paid keyed routes reach it at their own paths (outside PAID_PREFIX), upfront.
        priced = [
            PricedRoute(
                route.method,
                route.path.removeprefix(PAID_PREFIX),
                int(route.amount),
                settings.pay_to,
                settings.network,
                asset=asset,
                description=f"{route.method} {route.path}",
                networks=self.networks,
                handler_timeout=route.handler_timeout,
                upfront=route.upfront,
            )
            for route in routes
        ]
        self.config = PaymentConfig(
            routes=priced,
            facilitator=self.facilitator,
            ledger=self.ledger,
            networks=self.networks,
            max_request_body_bytes=MAX_BODY,
            unmatched="deny",
            render_error=render_gate_error,
            rate_limiter=PaidRateLimiter(
                parse_limit(settings.rate_limit_ip),
                parse_limit(settings.rate_limit_payer),
                settings.redis_url,
            ),
            reconcile_client=self.chain,
        )
        self.middleware = PaymentMiddleware(app, self.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.middleware(scope, receive, send)

    async def startup(self) -> None:
        """Migrate the ledger and reconcile settlements left open by a previous process."""
        await self.middleware.startup()

    async def aclose(self) -> None:
        """Stop the gate's maintenance, close the facilitator's connections, the ledger pool and
        any Redis client."""
        await self.middleware.aclose()
        await self.facilitator.aclose()
        if self.chain is not None:
            await self.chain.aclose()
        await self.ledger.close()
        if self.locks is not None:
            await self.locks.aclose()


def gate_factory(settings: Settings) -> Callable[[ASGIApp, tuple[PaidRoute, ...]], PaymentGate]:
    """The ``payment_middleware`` hook of :func:`server.app.create_app` for these settings."""

    def build(app: ASGIApp, routes: tuple[PaidRoute, ...]) -> PaymentGate:
        return PaymentGate(app, routes, settings)

    return build
