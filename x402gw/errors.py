"""Typed exceptions raised by x402gw: one tree, so callers can catch :class:`X402Error`.

The shape (classes defined elsewhere are named with their module)::

    X402Error
    ├── InvalidPaymentHeader        a header or 402 body that is not a valid x402 message
    ├── InvalidPaymentPayload       a scheme payload whose fields cannot be parsed
    ├── UnknownNetwork, UnknownAsset
    ├── InvalidPrice
    ├── config.InvalidRouteConfig   a priced route or payment config that cannot work
    ├── FacilitatorConfigError      a facilitator or facilitator app set up wrongly
    ├── devchain.DevChainError      the local development chain (anvil) (+RuntimeError)
    ├── NothingSent                 (mixin) failed before anything reached the chain
    ├── ChainError                  the chain edge
    │   ├── ChainUnavailable        transport failure (maybe sent, if during a broadcast)
    │   │   └── NotBroadcast        failed before the transaction was handed over (+NothingSent)
    │   ├── RpcError, SignerLockError, GasCapExceeded, AuthorizationLogMissing
    │   ├── SettlementReverted, SettlementPending, TransferEventMissing
    ├── FacilitatorUnavailable      a remote facilitator could not be reached
    │   └── FacilitatorNotReached   the request never left (+NothingSent)
    ├── FacilitatorError            a remote facilitator answered without a result
    └── ledger.LedgerError          the payment ledger (rules in x402gw.ledger.rules)
        ├── InvalidPaymentData, InvalidTransition, RecordNotFound, ConflictingTxHash
        ├── AuthorizationInUse, PaymentIdentifierInUse, PaymentIdentifierConflict
        ├── LedgerUnavailable
        └── locks.LockError: AuthorizationLocked, LockUnavailable, InvalidLockRequest
"""

from __future__ import annotations


class X402Error(Exception):
    """Base class of every error x402gw raises on purpose."""


class InvalidPaymentHeader(X402Error, ValueError):
    """A payment header or body that is too large, not base64, not JSON, or not a valid x402 message."""


class InvalidPaymentPayload(X402Error, ValueError):
    """A scheme payload (e.g. the exact-EVM authorization) whose fields cannot be parsed."""


class UnknownNetwork(X402Error, LookupError):
    """A network name or CAIP-2 id that is not registered (or not an EVM chain)."""


class UnknownAsset(X402Error, LookupError):
    """No asset is registered for a network (or for the given token address)."""


class InvalidPrice(X402Error, ValueError):
    """A price that is negative, not finite, malformed, or finer than the token's decimals."""


class ChainError(X402Error):
    """Base class of failures at the chain edge (RPC, transactions)."""


class NothingSent(X402Error):
    """Mixed into settlement failures that happened before anything could reach the chain
    (no transaction was broadcast, no facilitator received the request): nobody was charged."""


class ChainUnavailable(ChainError):
    """The RPC endpoint could not be reached or answered with a transport-level failure."""


class NotBroadcast(ChainUnavailable, NothingSent):
    """Settling failed before the transaction was handed to the node (estimate, fees, nonce, or
    a node that refused the transaction outright)."""


class SignerLockError(ChainError):
    """The operator key's cross-process lock file could not be opened or locked."""


class RpcError(ChainError):
    """The node answered with a JSON-RPC error that is not a contract revert (e.g. rate limit, bad params)."""


class SettlementReverted(ChainError):
    """A settlement transaction (or its pre-send estimate) reverted; ``reason`` is the revert text."""

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        super().__init__(reason if tx_hash is None else f"{reason} (tx {tx_hash})")
        self.reason = reason
        self.tx_hash = tx_hash


class SettlementPending(ChainError):
    """A settlement was broadcast but no receipt arrived before the timeout; it may still land."""

    def __init__(self, tx_hash: str) -> None:
        super().__init__(f"no receipt yet for {tx_hash}")
        self.tx_hash = tx_hash


class TransferEventMissing(ChainError):
    """A mined settlement whose receipt lacks the expected ERC-20 Transfer log."""

    def __init__(self, tx_hash: str) -> None:
        super().__init__(f"receipt of {tx_hash} has no matching Transfer event")
        self.tx_hash = tx_hash


class GasCapExceeded(ChainError):
    """A settlement's gas estimate is above the operator's cap: nothing was broadcast."""

    def __init__(self, estimate: int, cap: int) -> None:
        super().__init__(f"gas estimate {estimate} exceeds the cap of {cap}; nothing was sent")
        self.estimate = estimate
        self.cap = cap


class FacilitatorConfigError(X402Error, ValueError):
    """A facilitator or facilitator app built with unusable settings (allow-list, gas cap, auth)."""


class AuthorizationLogMissing(ChainError):
    """A used EIP-3009 nonce whose ``AuthorizationUsed``/``AuthorizationCanceled`` log (or the
    receipt it names) could not be found: reconciliation cannot say what paid, and waits."""


class FacilitatorUnavailable(X402Error):
    """A remote facilitator could not be reached (connection refused, timeout)."""


class FacilitatorNotReached(FacilitatorUnavailable, NothingSent):
    """The request never reached the remote facilitator (the connection was not made), so it
    cannot have settled anything."""


class FacilitatorError(X402Error):
    """A remote facilitator answered with something that is not a verify/settle/supported result.

    The message names the endpoint and status only; the body is logged (redacted), never carried.
    """

    def __init__(self, endpoint: str, status: int) -> None:
        super().__init__(f"facilitator /{endpoint} answered HTTP {status} without a result")
        self.endpoint = endpoint
        self.status = status
