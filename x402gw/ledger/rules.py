"""Pure rules of the payment ledger: states, the transition table, key normalisation, which
records hold an authorization, count as outstanding or may be claimed, replay, reconcile.

No I/O here, so every rule can be property-tested. Every store applies these decisions: the SQL
statements are built from them, and the in-memory store calls them row by row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from x402gw.errors import X402Error


class LedgerError(X402Error):
    """Base class of every error the ledger and its locks raise on purpose."""


class InvalidPaymentData(LedgerError, ValueError):
    """A field handed to the ledger that is malformed (bad nonce, negative amount, ...)."""


class InvalidTransition(LedgerError):
    """An event that the transition table does not allow from the record's current state."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


class State(StrEnum):
    """Life of one payment record; `settled`, `failed` and `released` are terminal."""

    VERIFIED = "verified"
    SETTLING = "settling"
    SETTLED = "settled"
    FAILED = "failed"
    RELEASED = "released"


class Event(StrEnum):
    """What an adapter reports about a payment."""

    SETTLE = "settle"  # settlement is about to be requested
    BROADCAST = "broadcast"  # a transaction hash is known, receipt not yet
    SETTLED = "settled"  # the transfer is on chain
    FAIL = "fail"  # settlement failed; the authorization stays blocked
    RELEASE = "release"  # nothing was broadcast; the authorization may be tried again
    STORE_RESPONSE = "store_response"  # keep the response for idempotent replays


class TxOutcome(StrEnum):
    """What a chain checker says about one transaction hash."""

    MINED_OK = "mined_ok"
    REVERTED = "reverted"
    UNKNOWN = "unknown"


class NonceUse(StrEnum):
    """What the chain says a record's EIP-3009 nonce was used for (a richer answer than a bool)."""

    PAID = "paid"  # by a successful transaction carrying this record's Transfer
    OTHER = "other"  # used or cancelled without paying this record: it never can now
    UNUSED = "unused"


TERMINAL: frozenset[State] = frozenset({State.SETTLED, State.FAILED, State.RELEASED})

# Blocking means: while a record is in this state, its authorization cannot be reserved again.
BLOCKING: frozenset[State] = frozenset(State) - {State.RELEASED}

_TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.VERIFIED, Event.SETTLE): State.SETTLING,
    (State.VERIFIED, Event.FAIL): State.FAILED,
    (State.VERIFIED, Event.RELEASE): State.RELEASED,
    (State.VERIFIED, Event.STORE_RESPONSE): State.VERIFIED,
    (State.SETTLING, Event.BROADCAST): State.SETTLING,
    (State.SETTLING, Event.SETTLED): State.SETTLED,
    (State.SETTLING, Event.FAIL): State.FAILED,
    (State.SETTLING, Event.STORE_RESPONSE): State.SETTLING,
    (State.SETTLED, Event.STORE_RESPONSE): State.SETTLED,
    (State.FAILED, Event.STORE_RESPONSE): State.FAILED,
}


def next_state(state: State, event: Event) -> State:
    """Return the state after `event`, or raise :class:`InvalidTransition`."""
    try:
        return _TRANSITIONS[(State(state), Event(event))]
    except KeyError:
        raise InvalidTransition(State(state), Event(event)) from None


def event_effect(event: Event) -> tuple[frozenset[State], State | None]:
    """The states `event` applies in and the one it leads to (None: it leaves the state as is).

    Every event has one target or only self-loops, which lets the ledger apply it in one
    conditional UPDATE instead of read, compare-and-set, read.
    """
    event = Event(event)
    moves = {(s, t) for (s, e), t in _TRANSITIONS.items() if e == event}
    targets = {t for s, t in moves if t != s}
    if len(targets) > 1 or (targets and any(s == t for s, t in moves)):
        raise AssertionError(f"event {event.value!r} has no single effect")  # pragma: no cover
    return frozenset(s for s, _ in moves), next(iter(targets), None)


def allowed_events(state: State) -> frozenset[Event]:
    """Events the table accepts in `state`."""
    return frozenset(e for (s, e) in _TRANSITIONS if s == state)


def transition_applies(
    state: State, recorded_tx: str | None, sources: Collection[State], offered_tx: str | None
) -> bool:
    """Whether a store applies an event (its `sources` from :func:`event_effect`) to a record
    in `state`: one authorization, one transaction, so a hash is set once and never replaced."""
    return state in sources and (offered_tx is None or recorded_tx in (None, offered_tx))


# --- which records count for what ----------------------------------------------------------------

# In flight: reserved or settling, so the payment may still move funds (until validBefore).
IN_FLIGHT: frozenset[State] = frozenset({State.VERIFIED, State.SETTLING})


def is_live(state: State) -> bool:
    """Whether a record in `state` holds its authorization and payment identifier (unique among
    live records)."""
    return state in BLOCKING


def in_flight(state: State, valid_before: int, now: int) -> bool:
    """Whether a payment may still move the payer's funds: in flight and not yet expired."""
    return state in IN_FLIGHT and valid_before > now


def counts_outstanding(
    state: State, valid_before: int, updated_at: datetime, now: int, settled_since: datetime
) -> bool:
    """Whether a payment counts against the payer's funds check: in flight, or settled since
    `settled_since` (the balance read before may not show it yet)."""
    return in_flight(state, valid_before, now) or (
        state is State.SETTLED and updated_at >= settled_since
    )


CLAIMED_STATUS: Final = 102
"""Response status of a settled record whose handler is running (HTTP 102 Processing)."""


def claimable(
    state: State, response_status: int | None, updated_at: datetime, stale_before: datetime
) -> bool:
    """Whether one handler run may take a record: settled with no response yet, or claimed by a
    run whose claim went stale (last touched before `stale_before`: its process died)."""
    return state is State.SETTLED and (
        response_status is None or (response_status == CLAIMED_STATUS and updated_at < stale_before)
    )


def replayable(state: State, response_status: int | None) -> bool:
    """Whether a stored response may be replayed: content once the payment settled; after a
    failure, only a stored refusal (status >= 400); never a claim still running."""
    if response_status is None or response_status == CLAIMED_STATUS:
        return False
    return state is State.SETTLED or (state is State.FAILED and response_status >= 400)


# --- normalisation of what identifies one authorization -------------------------------------

_HEX32 = re.compile(r"0x[0-9a-f]{64}")
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_TOKEN = re.compile(r"[!-~]{1,200}")  # printable ASCII, no spaces
MAX_UINT256 = 2**256 - 1
MAX_INT64 = 2**63 - 1


def normalise_nonce(nonce: str) -> str:
    """Lower-case 0x-prefixed bytes32 hex, as EIP-3009 nonces are."""
    value = nonce.strip().lower() if isinstance(nonce, str) else ""
    if not _HEX32.fullmatch(value):
        raise InvalidPaymentData(f"nonce must be 0x-prefixed 32-byte hex, got {nonce!r}")
    return value


def normalise_tx_hash(tx_hash: str) -> str:
    """Lower-case 0x-prefixed 32-byte transaction hash."""
    value = tx_hash.strip().lower() if isinstance(tx_hash, str) else ""
    if not _TX_HASH.fullmatch(value):
        raise InvalidPaymentData(f"tx hash must be 0x-prefixed 32-byte hex, got {tx_hash!r}")
    return value


def normalise_account(value: str, field: str) -> str:
    """EVM addresses are compared case-insensitively; other identifiers are kept verbatim."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidPaymentData(f"{field} must be 1-200 printable characters, got {value!r}")
    return value.lower() if _HEX_ADDRESS.fullmatch(value) else value


def normalise_token(value: str, field: str) -> str:
    """A short identifier such as a scheme or network name."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidPaymentData(f"{field} must be 1-200 printable characters, got {value!r}")
    return value


def check_amount(amount: int) -> str:
    """Atomic units as a decimal string; uint256 range."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_UINT256:
        raise InvalidPaymentData(f"amount must be an int in uint256 range, got {amount!r}")
    return str(amount)


def check_valid_before(valid_before: int) -> int:
    """Unix seconds; values past int64 mean "never" on any real chain, so they saturate."""
    if (
        isinstance(valid_before, bool)
        or not isinstance(valid_before, int)
        or not 0 <= valid_before <= MAX_UINT256
    ):
        raise InvalidPaymentData(f"valid_before must be a uint256 int, got {valid_before!r}")
    return min(valid_before, MAX_INT64)


def check_resource(resource: str) -> str:
    """`METHOD /path`, printable, bounded."""
    if (
        not isinstance(resource, str)
        or not 1 <= len(resource) <= 2000
        or not resource.isprintable()
    ):
        raise InvalidPaymentData(f"resource must be 1-2000 printable characters, got {resource!r}")
    return resource


def check_fingerprint(fingerprint: str) -> str:
    """A request fingerprint as made by :func:`request_fingerprint`."""
    if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        raise InvalidPaymentData(
            f"fingerprint must be 64 lower-case hex chars, got {fingerprint!r}"
        )
    return fingerprint


def check_payment_identifier(pid: str | None) -> str | None:
    """The payment-identifier extension value: printable, no spaces, at most 200 chars."""
    if pid is None:
        return None
    return normalise_token(pid, "payment_identifier")


def authorization_key(network: str, asset: str, payer: str, nonce: str) -> str:
    """The string that names one authorization everywhere (ledger key parts, lock names)."""
    return "|".join(
        (
            normalise_token(network, "network"),
            normalise_account(asset, "asset"),
            normalise_account(payer, "payer"),
            normalise_nonce(nonce),
        )
    )


def request_fingerprint(
    method: str, path: str, body: bytes, idempotency_key: str | None = None
) -> str:
    """SHA-256 over length-prefixed method, path, body and idempotency key (unambiguous framing)."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidPaymentData("body must be bytes")
    digest = hashlib.sha256()
    parts = (
        method.upper().encode(),
        path.encode(),
        bytes(body),
        b"\x00" if idempotency_key is None else b"\x01" + idempotency_key.encode(),
    )
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# --- reconcile ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileDecision:
    """What to do with one `settling` record: an event to apply (or None = leave) and why."""

    event: Event | None
    note: str


def decide_reconcile(
    *,
    has_tx_hash: bool,
    outcome: TxOutcome | None,
    authorization_used: bool | NonceUse | None,
    expired: bool,
) -> ReconcileDecision:
    """Settle or fail a record left in `settling`; never ask for a second broadcast.

    `outcome` is the receipt status of the stored hash (None when there is none),
    `authorization_used` the on-chain EIP-3009 nonce state (None when unknown; a bare True
    trusts that any use paid this record, :class:`NonceUse` says whether it did), `expired`
    whether `validBefore` has passed, after which no transaction can use the authorization.
    """
    if has_tx_hash and outcome is TxOutcome.MINED_OK:
        return ReconcileDecision(Event.SETTLED, "transaction mined")
    if authorization_used is NonceUse.OTHER:
        return ReconcileDecision(Event.FAIL, "authorization used without paying this record")
    if isinstance(authorization_used, NonceUse):
        authorization_used = authorization_used is NonceUse.PAID
    if authorization_used:
        # Whoever submitted it, an EIP-3009 transfer always pays `to`: the payment happened.
        return ReconcileDecision(Event.SETTLED, "authorization used on chain")
    if has_tx_hash and outcome is TxOutcome.REVERTED:
        return ReconcileDecision(Event.FAIL, "transaction reverted")
    if authorization_used is False and expired:
        return ReconcileDecision(Event.FAIL, "authorization expired unused")
    return ReconcileDecision(None, "undetermined")
