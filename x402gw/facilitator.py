"""Facilitators: verify and settle x402 payments locally on chain, or through a remote HTTP facilitator."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, TypeVar

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from x402gw import exact_evm
from x402gw.chain import ChainClient, Settler, transfer_calldata
from x402gw.errors import (
    ChainError,
    SettlementPending,
    SettlementReverted,
    TransferEventMissing,
    UnknownNetwork,
    X402Error,
)
from x402gw.exact_evm import Candidate, Invalid
from x402gw.ledger import Ledger, PaymentRecord, ReconcileSummary, TxOutcome
from x402gw.networks import NETWORKS, NetworkRegistry
from x402gw.wire import (
    AnyPaymentPayload,
    FacilitatorRequest,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    WireModel,
)

AnyRequirements = PaymentRequirements | PaymentRequirementsV1
BroadcastHook = Callable[[str], Awaitable[None]]
"""Called with the transaction hash right after broadcast, before the receipt wait."""
AuthHeaders = Callable[[str], Awaitable[Mapping[str, str]]]
"""Given "verify" / "settle" / "supported", the extra headers (e.g. Authorization) for that call."""

AUTHORIZATION_IN_USE: Final = "authorization_in_use"
UNEXPECTED_SETTLE_ERROR: Final = "unexpected_settle_error"
_M = TypeVar("_M", bound=WireModel)


class FacilitatorUnavailable(X402Error):
    """A remote facilitator could not be reached (connection refused, timeout)."""


class FacilitatorError(X402Error):
    """A remote facilitator answered with something that is not a verify/settle/supported result."""

    def __init__(self, endpoint: str, status: int, excerpt: str) -> None:
        super().__init__(f"facilitator /{endpoint} answered {status}: {excerpt}")
        self.endpoint = endpoint
        self.status = status


class Facilitator(Protocol):
    """What the middleware needs from a facilitator (local or remote).

    ``verify``/``settle`` return results for payment problems and raise only when the chain or
    the facilitator itself cannot be reached (:class:`ChainError`, :class:`FacilitatorUnavailable`).
    """

    async def verify(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> VerifyResponse:
        """Check a payment without moving funds."""
        ...

    async def settle(
        self,
        payload: AnyPaymentPayload,
        requirements: AnyRequirements,
        *,
        on_broadcast: BroadcastHook | None = None,
    ) -> SettleResponse:
        """Move the funds; ``on_broadcast`` (if the facilitator knows the hash early) gets the hash."""
        ...

    async def supported(self) -> SupportedResponse:
        """The (version, scheme, network) kinds handled."""
        ...


class LocalFacilitator:
    """The exact-EVM rules of :mod:`x402gw.exact_evm` over :mod:`x402gw.chain` facts, settling itself.

    One chain per instance. ``after_broadcast`` is an extra hook run after ``on_broadcast`` (tests
    use it to kill a process between broadcast and receipt).
    """

    def __init__(
        self,
        client: ChainClient,
        settler: Settler,
        network: str,
        *,
        networks: NetworkRegistry = NETWORKS,
        allowed_factories: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        after_broadcast: BroadcastHook | None = None,
    ) -> None:
        self.client = client
        self.settler = settler
        self.networks = networks
        self.network = networks.to_caip2(network)
        self.chain_id = networks.chain_id(self.network)
        self._factories = tuple(allowed_factories)
        self._clock = clock
        self._after_broadcast = after_broadcast
        self._in_flight: set[tuple[str, bytes]] = set()

    @classmethod
    def from_rpc(
        cls,
        rpc_url: str,
        operator: LocalAccount | str,
        network: str,
        *,
        networks: NetworkRegistry = NETWORKS,
        receipt_timeout: float = 60.0,
        **options: Any,
    ) -> LocalFacilitator:
        """A facilitator on ``rpc_url`` paying gas from ``operator`` (an account or private key)."""
        account = operator if isinstance(operator, LocalAccount) else Account.from_key(operator)
        client = ChainClient(rpc_url)
        settler = Settler(client, account, receipt_timeout=receipt_timeout)
        return cls(client, settler, network, networks=networks, **options)

    async def aclose(self) -> None:
        """Close the RPC session."""
        await self.client.aclose()

    def _served(self, requirements: AnyRequirements) -> bool:
        try:
            return self.networks.chain_id(requirements.network) == self.chain_id
        except UnknownNetwork:
            return False

    async def verify(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> VerifyResponse:
        """The SDK's verify order: off-chain rules, signature routing, asset code, simulation."""
        if not self._served(requirements):
            return VerifyResponse(
                is_valid=False, invalid_reason=exact_evm.FAILED_TO_GET_NETWORK_CONFIG
            )
        return await self.client.verify(
            payload,
            requirements,
            now=int(self._clock()),
            networks=self.networks,
            allowed_factories=self._factories,
            sender=self.settler.address,
        )

    async def _candidate(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> Candidate | Invalid:
        if not self._served(requirements):
            return Invalid(exact_evm.FAILED_TO_GET_NETWORK_CONFIG)
        checked = exact_evm.check_offchain(
            payload, requirements, now=int(self._clock()), networks=self.networks
        )
        if isinstance(checked, Invalid):
            return checked
        facts = await self.client.gather_facts(
            checked, simulate=False, allowed_factories=self._factories
        )
        return exact_evm.check_onchain(checked, facts, self._factories) or checked

    async def settle(
        self,
        payload: AnyPaymentPayload,
        requirements: AnyRequirements,
        *,
        on_broadcast: BroadcastHook | None = None,
    ) -> SettleResponse:
        """Re-check, broadcast ``transferWithAuthorization`` once, wait for and check the receipt.

        A revert at gas estimation costs nothing and is reported with the token's reason; a
        missing receipt gives ``settlement_pending`` with the hash (reconcile it, never resend).
        """
        network = requirements.network
        checked = await self._candidate(payload, requirements)
        if isinstance(checked, Invalid):
            return _settle_failure(network, checked.reason, checked.payer, checked.message)
        key = (checked.payer.lower(), checked.authorization.nonce)
        if key in self._in_flight:
            return _settle_failure(network, AUTHORIZATION_IN_USE, checked.payer)
        self._in_flight.add(key)
        try:
            return await self._broadcast(checked, network, on_broadcast)
        finally:
            self._in_flight.discard(key)

    async def _broadcast(
        self, candidate: Candidate, network: str, on_broadcast: BroadcastHook | None
    ) -> SettleResponse:
        payer = candidate.payer
        wrapped = candidate.erc6492
        try:
            if wrapped is not None and wrapped.has_deployment_info:
                settled = await self.settler.settle(candidate)  # deploys the wallet first
                return _settle_success(network, payer, settled.tx_hash, candidate)
            tx_hash = await self.settler.send(candidate.token, transfer_calldata(candidate))
            if on_broadcast is not None:
                await on_broadcast(tx_hash)
            if self._after_broadcast is not None:
                await self._after_broadcast(tx_hash)
            receipt = await self.client.wait_for_receipt(tx_hash, self.settler.receipt_timeout)
        except SettlementReverted as exc:
            reason = exact_evm.map_revert(exc.reason) or exact_evm.TRANSACTION_FAILED
            return _settle_failure(network, reason, payer, exc.reason, exc.tx_hash or "")
        except SettlementPending as exc:
            return _settle_failure(network, exact_evm.SETTLEMENT_PENDING, payer, None, exc.tx_hash)
        except TransferEventMissing as exc:
            return _settle_failure(
                network, exact_evm.TRANSFER_EVENT_MISMATCH, payer, None, exc.tx_hash
            )
        if receipt.status != 1:
            return _settle_failure(network, exact_evm.TRANSACTION_FAILED, payer, None, tx_hash)
        if not exact_evm.transfer_log_matches(
            receipt.logs, candidate.token, candidate.authorization
        ):
            return _settle_failure(network, exact_evm.TRANSFER_EVENT_MISMATCH, payer, None, tx_hash)
        return _settle_success(network, payer, tx_hash, candidate)

    async def supported(self) -> SupportedResponse:
        """exact on this chain, in v2 (CAIP-2) and, when it has a legacy name, v1."""
        kinds = [SupportedKind(x402_version=2, scheme="exact", network=self.network)]
        with contextlib.suppress(UnknownNetwork):
            kinds.append(
                SupportedKind(
                    x402_version=1, scheme="exact", network=self.networks.to_v1(self.network)
                )
            )
        return SupportedResponse(kinds=kinds, signers={"eip155:*": [self.settler.address]})


def _settle_failure(
    network: str, reason: str, payer: str | None, message: str | None = None, tx: str = ""
) -> SettleResponse:
    return SettleResponse(
        success=False,
        error_reason=reason,
        error_message=message,
        payer=payer,
        transaction=tx,
        network=network,
    )


def _settle_success(network: str, payer: str, tx_hash: str, candidate: Candidate) -> SettleResponse:
    return SettleResponse(
        success=True,
        payer=payer,
        transaction=tx_hash,
        network=network,
        amount=str(candidate.authorization.value),
    )


class HttpFacilitator:
    """Client of a remote facilitator's ``/verify``, ``/settle`` and ``/supported``.

    Results arrive with HTTP 200 or, from some hosted facilitators, 4xx: both are parsed. Anything
    else raises :class:`FacilitatorError`; transport failures raise :class:`FacilitatorUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 90.0,
        auth_headers: AuthHeaders | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._auth = auth_headers
        self._owns_client = client is None
        self._http = client or httpx.AsyncClient(timeout=timeout, follow_redirects=True)

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._owns_client:
            await self._http.aclose()

    async def _headers(self, endpoint: str) -> dict[str, str]:
        return dict(await self._auth(endpoint)) if self._auth is not None else {}

    async def _call(self, endpoint: str, model: type[_M], body: dict[str, Any] | None = None) -> _M:
        headers = await self._headers(endpoint)
        try:
            if body is None:
                response = await self._http.get(f"{self.url}/{endpoint}", headers=headers)
            else:
                response = await self._http.post(
                    f"{self.url}/{endpoint}", json=body, headers=headers
                )
        except httpx.TransportError as exc:
            raise FacilitatorUnavailable(f"facilitator /{endpoint} unreachable: {exc!r}") from exc
        if response.status_code == 200 or 400 <= response.status_code < 500:
            try:
                return model.model_validate_json(response.content)
            except ValidationError:
                pass
        raise FacilitatorError(endpoint, response.status_code, response.text[:200])

    @staticmethod
    def _body(payload: AnyPaymentPayload, requirements: AnyRequirements) -> dict[str, Any]:
        return FacilitatorRequest(
            x402_version=payload.x402_version,
            payment_payload=payload,
            payment_requirements=requirements,
        ).to_json_dict()

    async def verify(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> VerifyResponse:
        """POST /verify."""
        return await self._call("verify", VerifyResponse, self._body(payload, requirements))

    async def settle(
        self,
        payload: AnyPaymentPayload,
        requirements: AnyRequirements,
        *,
        on_broadcast: BroadcastHook | None = None,
    ) -> SettleResponse:
        """POST /settle (the hash is known only from the answer, so ``on_broadcast`` runs then)."""
        result = await self._call("settle", SettleResponse, self._body(payload, requirements))
        if on_broadcast is not None and result.transaction:
            await on_broadcast(result.transaction)
        return result

    async def supported(self) -> SupportedResponse:
        """GET /supported."""
        return await self._call("supported", SupportedResponse)


async def reconcile_ledger(ledger: Ledger, client: ChainClient) -> ReconcileSummary:
    """Settle or fail every ``settling`` record from its stored hash and the EIP-3009 nonce state."""

    async def check_tx(record: PaymentRecord) -> TxOutcome:
        assert record.tx_hash is not None  # the ledger asks only for records with a hash
        receipt = await client.get_receipt(record.tx_hash)
        if receipt is None:
            return TxOutcome.UNKNOWN
        return TxOutcome.MINED_OK if receipt.status == 1 else TxOutcome.REVERTED

    async def authorization_used(record: PaymentRecord) -> bool:
        return await client.authorization_state(
            record.asset, record.payer, bytes.fromhex(record.nonce[2:])
        )

    return await ledger.reconcile(check_tx, authorization_used)


__all__ = [
    "AUTHORIZATION_IN_USE",
    "AuthHeaders",
    "BroadcastHook",
    "ChainError",
    "Facilitator",
    "FacilitatorError",
    "FacilitatorUnavailable",
    "HttpFacilitator",
    "LocalFacilitator",
    "reconcile_ledger",
]
