"""Facilitators: verify and settle x402 payments locally on chain, or through a remote HTTP facilitator."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, TypeVar

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from x402gw import exact_evm
from x402gw._jsonrpc import Redactor
from x402gw.chain import (
    AUTHORIZATION_CANCELED,
    AUTHORIZATION_USED,
    ChainClient,
    FactGatherer,
    Settler,
)
from x402gw.errors import (
    AuthorizationLogMissing,
    ChainUnavailable,
    FacilitatorConfigError,
    FacilitatorError,
    FacilitatorNotReached,
    FacilitatorUnavailable,
    GasCapExceeded,
    NotBroadcast,
    SettlementPending,
    SettlementReverted,
    TransferEventMissing,
    UnknownNetwork,
)
from x402gw.exact_evm import Candidate, Invalid
from x402gw.ledger import Ledger, NonceUse, PaymentRecord, ReconcileSummary, TxOutcome
from x402gw.networks import NETWORKS, NetworkRegistry
from x402gw.signer_lock import SignerLock
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
"""Called with the transaction hash after broadcast when the receipt must be waited for (not
when the node answers it at once: the hash then comes with the result)."""
AuthHeaders = Callable[[str], Awaitable[Mapping[str, str]]]
"""Given "verify" / "settle" / "supported", the extra headers (e.g. Authorization) for that call."""

log = logging.getLogger("x402gw.facilitator")
AUTHORIZATION_IN_USE: Final = "authorization_in_use"
GAS_CAP_EXCEEDED: Final = "settlement_gas_cap_exceeded"
PAYMENT_NOT_ALLOWED: Final = "payment_not_allowed"
_NOT_ALLOWED_MESSAGE: Final = "this facilitator does not settle payments to this asset and payTo"
_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
MIN_TOKEN_CHARS: Final = 16
DEFAULT_SETTLE_GAS_CAP: Final = 150_000
"""Gas a settlement may use: ``transferWithAuthorization`` costs 75-90k on the test token (most
when the recipient's balance is new), about as much on USDC, a little more from a contract wallet;
far more means a token burning the operator's gas."""
_VERIFIED_TTL: Final = 60.0  # seconds a successful verify lets settle skip repeating its reads
_VERIFIED_MAX: Final = 10_000
_M = TypeVar("_M", bound=WireModel)


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
        """Move the funds; ``on_broadcast`` gets the hash when it is known before the outcome."""
        ...

    async def supported(self) -> SupportedResponse:
        """The (version, scheme, network) kinds handled."""
        ...


class LocalFacilitator:
    """The exact-EVM rules of :mod:`x402gw.exact_evm` over :mod:`x402gw.chain` facts, settling itself.

    One chain per instance. ``after_broadcast`` is an extra hook run after ``on_broadcast`` (tests
    use it to kill a process between broadcast and receipt). ``max_settle_gas`` caps the gas a
    settlement may use (None: no cap); an estimate above it is refused before broadcasting.

    ``allowed_payments``: the (asset, payTo) pairs this facilitator settles; anything else is
    refused (``payment_not_allowed``) before any RPC call. None serves any pair: only for use
    in process behind a middleware that already matches payments to its own offers. A
    facilitator serving others (:class:`~x402gw.facilitator_app.FacilitatorApp`) needs a list.
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
        max_settle_gas: int | None = DEFAULT_SETTLE_GAS_CAP,
        allowed_payments: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        if max_settle_gas is not None and (
            isinstance(max_settle_gas, bool)
            or not isinstance(max_settle_gas, int)
            or max_settle_gas <= 0
        ):
            raise FacilitatorConfigError(
                f"max_settle_gas must be a positive int or None, got {max_settle_gas!r}"
            )
        self.max_settle_gas = max_settle_gas
        self.allowed_payments = _allow_list(allowed_payments)
        self.client = client
        self.settler = settler
        self.networks = networks
        self.network = networks.to_caip2(network)
        self.chain_id = networks.chain_id(self.network)
        self._factories = tuple(allowed_factories)
        self._clock = clock
        self._after_broadcast = after_broadcast
        self._in_flight: set[tuple[str, bytes]] = set()
        self.facts = FactGatherer(
            client, sender=settler.address, allowed_factories=self._factories, clock=clock
        )
        self._verified: dict[tuple[bytes, str], tuple[Candidate, float]] = {}
        # check_offchain is a pure function of (payload, requirements, whole second): settle
        # reuses verify's answer within the same second instead of recovering the signer again.
        self._offchain_second = -1
        self._offchain_memo: dict[tuple[str, str], Candidate | Invalid] = {}

    @classmethod
    def from_rpc(
        cls,
        rpc_url: str,
        operator: LocalAccount | str,
        network: str,
        *,
        networks: NetworkRegistry = NETWORKS,
        receipt_timeout: float = 60.0,
        signer_lock: SignerLock | None = None,
        **options: Any,
    ) -> LocalFacilitator:
        """A facilitator on ``rpc_url`` paying gas from ``operator`` (an account or private key);
        ``signer_lock`` when other processes settle with the same key."""
        account = operator if isinstance(operator, LocalAccount) else Account.from_key(operator)
        client = ChainClient(rpc_url)
        settler = Settler(client, account, receipt_timeout=receipt_timeout, signer_lock=signer_lock)
        return cls(client, settler, network, networks=networks, **options)

    async def aclose(self) -> None:
        """Close the RPC sessions (the client keeps one keep-alive session per event loop)."""
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
        checked = self._offchain(payload, requirements)
        if isinstance(checked, Invalid):
            return _invalid(checked)
        facts = await self.facts.gather(checked, simulate=True)
        invalid = exact_evm.check_onchain(checked, facts, self._factories)
        if invalid is not None:
            return _invalid(invalid)
        self._remember(checked, requirements)
        return VerifyResponse(is_valid=True, payer=checked.payer)

    def _offchain(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> Candidate | Invalid:
        if not self._served(requirements):
            return Invalid(exact_evm.FAILED_TO_GET_NETWORK_CONFIG)
        allowed = self.allowed_payments
        if allowed is not None and (
            (requirements.asset.lower(), requirements.pay_to.lower()) not in allowed
        ):
            return Invalid(PAYMENT_NOT_ALLOWED, None, _NOT_ALLOWED_MESSAGE)
        now = int(self._clock())
        if now != self._offchain_second:
            self._offchain_memo.clear()
            self._offchain_second = now
        key = (payload.model_dump_json(), requirements.model_dump_json())
        found = self._offchain_memo.get(key)
        if found is None:
            found = exact_evm.check_offchain(payload, requirements, now=now, networks=self.networks)
            if isinstance(found, Candidate):  # a plain signature must recover to `from`, offline
                found = exact_evm.check_plain_signature(found) or found
            if len(self._offchain_memo) < _VERIFIED_MAX:
                self._offchain_memo[key] = found
        return found

    def _remember(self, candidate: Candidate, requirements: AnyRequirements) -> None:
        now = self._clock()
        for key, (_, seen) in list(self._verified.items()):
            if now - seen > _VERIFIED_TTL:
                del self._verified[key]
        if len(self._verified) < _VERIFIED_MAX:
            self._verified[(candidate.signature, requirements.model_dump_json())] = (candidate, now)

    async def _candidate(
        self, payload: AnyPaymentPayload, requirements: AnyRequirements
    ) -> Candidate | Invalid:
        checked = self._offchain(payload, requirements)
        if isinstance(checked, Invalid):
            return checked
        remembered = self._verified.pop((checked.signature, requirements.model_dump_json()), None)
        if (
            remembered is not None
            and remembered[0] == checked
            and self._clock() - remembered[1] <= _VERIFIED_TTL
        ):
            return checked  # verified (with simulation) moments ago; estimation re-checks anyway
        facts = await self.facts.gather(checked, simulate=False)
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
        try:
            checked = await self._candidate(payload, requirements)
        except ChainUnavailable as exc:  # reads before anything is signed or sent
            raise NotBroadcast(f"settlement not sent: {exc}") from exc
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

        async def sent(tx_hash: str, mined: bool) -> None:
            # A mined transaction's hash goes to the caller with the result: the hook (one more
            # durable write) is only for a real wait.
            if not mined and on_broadcast is not None:
                await on_broadcast(tx_hash)
            if self._after_broadcast is not None:
                await self._after_broadcast(tx_hash)

        try:
            settled = await self.settler.settle(
                candidate, max_gas=self.max_settle_gas, on_sent=sent
            )
        except GasCapExceeded as exc:
            log.warning("refused to settle for %s on %s: %s", payer, candidate.token, exc)
            return _settle_failure(network, GAS_CAP_EXCEEDED, payer, str(exc))
        except SettlementReverted as exc:
            reason = exact_evm.map_revert(exc.reason) or exact_evm.TRANSACTION_FAILED
            return _settle_failure(network, reason, payer, exc.reason, exc.tx_hash or "")
        except SettlementPending as exc:
            return _settle_failure(network, exact_evm.SETTLEMENT_PENDING, payer, None, exc.tx_hash)
        except TransferEventMissing as exc:
            return _settle_failure(
                network, exact_evm.TRANSFER_EVENT_MISMATCH, payer, None, exc.tx_hash
            )
        return _settle_success(network, payer, settled.tx_hash, candidate)

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


def check_bearer_token(token: str) -> str:
    """``token`` if it can be a bearer token: :data:`MIN_TOKEN_CHARS`+ characters of RFC 6750's
    b64token alphabet; else :class:`FacilitatorConfigError` (without echoing the token)."""
    if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
        raise FacilitatorConfigError(
            "a bearer token uses only A-Z a-z 0-9 - . _ ~ + / and a = tail"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise FacilitatorConfigError(f"a bearer token needs {MIN_TOKEN_CHARS}+ characters")
    return token


def _bearer_headers(token: str) -> AuthHeaders:
    headers = {"Authorization": f"Bearer {token}"}

    async def auth(_endpoint: str) -> Mapping[str, str]:
        return headers

    return auth


def _allow_list(pairs: Iterable[tuple[str, str]] | None) -> frozenset[tuple[str, str]] | None:
    """The (asset, payTo) pairs, lower-cased; raises :class:`FacilitatorConfigError` on anything
    that is not a non-empty collection of address pairs."""
    if pairs is None:
        return None
    found: set[tuple[str, str]] = set()
    for pair in pairs:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in pair)
        ):
            raise FacilitatorConfigError(
                f"allowed_payments holds {pair!r}, not an (asset, payTo) pair of 0x addresses"
            )
        found.add((pair[0].lower(), pair[1].lower()))
    if not found:
        raise FacilitatorConfigError("allowed_payments is empty: nothing could be settled")
    return frozenset(found)


def _invalid(invalid: Invalid) -> VerifyResponse:
    return VerifyResponse(
        is_valid=False,
        invalid_reason=invalid.reason,
        invalid_message=invalid.message,
        payer=invalid.payer,
    )


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
    Authentication: ``bearer_token`` (sent as ``Authorization: Bearer``) or ``auth_headers``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 90.0,
        auth_headers: AuthHeaders | None = None,
        bearer_token: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if bearer_token is not None:
            if auth_headers is not None:
                raise FacilitatorConfigError("give auth_headers or bearer_token, not both")
            auth_headers = _bearer_headers(check_bearer_token(bearer_token))
        self.url = url.rstrip("/")
        self._redact = Redactor(self.url)
        self._auth = auth_headers
        self._owns_client = client is None
        # No redirects: a connection error on a later hop would look like "never reached"
        # although the first hop may have settled; a 3xx is an error (pending for /settle).
        self._http = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

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
        except httpx.RequestError as exc:  # transport failures, too many redirects
            where = self._redact.endpoint
            log.warning(
                "facilitator %s /%s unreachable: %s", where, endpoint, self._redact(repr(exc))
            )
            kind = (
                FacilitatorNotReached
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                else FacilitatorUnavailable
            )
            raise kind(
                f"facilitator /{endpoint} unreachable: {type(exc).__name__} ({where})"
            ) from None
        if response.status_code == 200 or 400 <= response.status_code < 500:
            try:
                return model.model_validate_json(response.content)
            except ValidationError:
                pass
        log.warning(
            "facilitator %s /%s answered %d: %s",
            self._redact.endpoint,
            endpoint,
            response.status_code,
            self._redact(response.content[:4096].decode("utf-8", "replace"))[:200],
        )
        raise FacilitatorError(endpoint, response.status_code)

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
        """POST /settle; the hash is known only from the answer, so ``on_broadcast`` runs then,
        for an answer that is not a success (pending) but names a transaction."""
        result = await self._call("settle", SettleResponse, self._body(payload, requirements))
        if on_broadcast is not None and result.transaction and not result.success:
            await on_broadcast(result.transaction)
        return result

    async def supported(self) -> SupportedResponse:
        """GET /supported."""
        return await self._call("supported", SupportedResponse)


async def reconcile_ledger(
    ledger: Ledger, client: ChainClient, *, lookback_blocks: int = 50_000
) -> ReconcileSummary:
    """Settle or fail every ``settling`` record from chain facts; never broadcasts.

    A record settles only on a successful transaction whose receipt carries its own Transfer
    (the record's asset, payer -> payTo, amount): its stored hash, or else the transaction of
    the token's ``AuthorizationUsed`` log for (payer, nonce), whose hash it then records. A
    nonce used otherwise (another authorization with the same nonce, a cancellation, our own
    transaction reverted) fails it. A used nonce with neither an ``AuthorizationUsed`` nor an
    ``AuthorizationCanceled`` log in the last ``lookback_blocks`` blocks stays pending, in the
    summary's errors: widen the window.
    """
    paid_by: dict[str, str] = {}

    async def pays(tx_hash: str, record: PaymentRecord) -> bool | None:
        receipt = await client.get_receipt(tx_hash)
        if receipt is None:
            return None
        return receipt.status == 1 and exact_evm.transfer_log_pays(
            receipt.logs, record.asset, record.payer, record.pay_to, record.amount
        )

    async def check_tx(record: PaymentRecord) -> TxOutcome:
        assert record.tx_hash is not None  # the ledger asks only for records with a hash
        paid = await pays(record.tx_hash, record)
        if paid is None:
            return TxOutcome.UNKNOWN
        return TxOutcome.MINED_OK if paid else TxOutcome.REVERTED  # or mined, paying otherwise

    async def authorization_used(record: PaymentRecord) -> NonceUse:
        nonce = bytes.fromhex(record.nonce[2:])
        if not await client.authorization_state(record.asset, record.payer, nonce):
            return NonceUse.UNUSED
        found = await client.authorization_event(
            record.asset, record.payer, nonce, lookback_blocks=lookback_blocks
        )
        if found is None:
            raise AuthorizationLogMissing(
                f"nonce used on chain but no AuthorizationUsed or AuthorizationCanceled log in "
                f"the last {lookback_blocks} blocks"
            )
        kind, tx_hash = found
        if kind == AUTHORIZATION_USED:
            paid = await pays(tx_hash, record)
            if paid is None:
                raise AuthorizationLogMissing(f"no receipt for {tx_hash}, named by a log")
            if paid:
                paid_by[record.id] = tx_hash
                return NonceUse.PAID
        log.warning(
            "reconcile: record %s: authorization %s by %s without paying it",
            record.id,
            "cancelled" if kind == AUTHORIZATION_CANCELED else f"used in {tx_hash}",
            record.payer,
        )
        return NonceUse.OTHER

    async def find_tx(record: PaymentRecord) -> str | None:
        return paid_by.get(record.id)  # asked only after authorization_used answered PAID

    chain_time = await client.latest_block_timestamp()
    return await ledger.reconcile(check_tx, authorization_used, find_tx, chain_time=chain_time)


__all__ = [
    "AUTHORIZATION_IN_USE",
    "DEFAULT_SETTLE_GAS_CAP",
    "GAS_CAP_EXCEEDED",
    "PAYMENT_NOT_ALLOWED",
    "AuthHeaders",
    "BroadcastHook",
    "Facilitator",
    "FacilitatorError",
    "FacilitatorNotReached",
    "FacilitatorUnavailable",
    "HttpFacilitator",
    "LocalFacilitator",
    "check_bearer_token",
    "reconcile_ledger",
]
