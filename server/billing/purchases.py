"""Credits bought with x402 (``POST /api/v1/credits/purchase``): what binds a payment to an
account, the ledger reference that books it once, and recovery of settled purchases.

The keyed entry hands the payment gate the request with its query string replaced by
``account=<user id>&credits=<pack>`` (:func:`binding_query`). The gate fingerprints and records
that target, so the gate's payment record, written before the transfer is broadcast, names the
account and the pack it pays for; the same payment repeated for another account is a different
request (refused, never replayed to it). The handler books the pack with the reference of the
authorization (:func:`purchase_reference`), once per (user, reference); :func:`recover_purchases`
books, from the gate's ledger, any settled purchase whose booking a crash or a database failure
left undone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.billing.credit_rules import EntryKind
from server.billing.credits import UnknownAccount
from server.billing.pricing import PURCHASE_KEY
from server.ids import is_id

if TYPE_CHECKING:
    from server.billing.credits import CreditStore
    from x402gw.ledger import Ledger, PaymentRecord

__all__ = [
    "PURCHASE_PATH",
    "Binding",
    "binding_from_resource",
    "binding_query",
    "book",
    "purchase_reference",
    "recover_purchases",
]

log = logging.getLogger("bavlio.purchases")

PURCHASE_PATH = "/api/v1/credits/purchase"
_QUERY = re.compile(r"account=(usr_[0-9A-Z]{26})&credits=([1-9][0-9]{0,6})")
_HEX = re.compile(r"0x[0-9a-f]+")


@dataclass(frozen=True)
class Binding:
    """Who a purchase credits and how many credits it adds."""

    user_id: str
    credits: int


def binding_query(binding: Binding) -> bytes:
    """The query string the gate sees for a purchase (what its record keeps)."""
    return f"account={binding.user_id}&credits={binding.credits}".encode("ascii")


def binding_from_resource(resource: str) -> Binding | None:
    """The binding of a gate record's resource (``POST /api/v1/credits/purchase?…``), or None
    when the record is not a purchase (another paid route, or a path under a root path)."""
    method, _, target = resource.partition(" ")
    path, _, query = target.partition("?")
    if method != "POST" or not path.endswith(PURCHASE_PATH):
        return None
    found = _QUERY.fullmatch(query)
    if found is None or not is_id(found.group(1), "usr"):
        return None
    return Binding(found.group(1), int(found.group(2)))


def purchase_reference(network: str, asset: str, payer: str, nonce: str) -> str:
    """The ledger reference of a purchase: its EIP-3009 authorization (network, token, payer,
    nonce), which the token contract lets settle once, so it names one settled payment.

    Raises ValueError for parts that are not an address or a hex nonce."""
    parts = [asset.strip().lower(), payer.strip().lower(), nonce.strip().lower()]
    if not all(_HEX.fullmatch(part) for part in parts) or not network:
        raise ValueError("not an EIP-3009 authorization")
    return ":".join(["x402", network.strip().lower(), *parts])


async def book(credits: CreditStore, binding: Binding, reference: str) -> bool:
    """Add the pack to the account once per reference; False when it was booked already."""
    return await credits.add(
        binding.user_id,
        binding.credits,
        kind=EntryKind.PURCHASE,
        reference=reference,
        operation=PURCHASE_KEY,
    )


async def recover_purchases(ledger: Ledger, credits: CreditStore) -> int:
    """Book every settled purchase in the gate's ledger that is not booked yet; the number
    booked now. Safe to run at any time and in several processes (bookings are idempotent)."""
    from x402gw.ledger import State

    booked = 0
    records: list[PaymentRecord] = await ledger.records(State.SETTLED)
    for record in records:
        binding = binding_from_resource(record.resource)
        if binding is None:
            continue
        reference = purchase_reference(record.network, record.asset, record.payer, record.nonce)
        try:
            if await book(credits, binding, reference):
                booked += 1
                log.warning("bavlio: recovered purchase %s for %s", reference, binding.user_id)
        except UnknownAccount as exc:  # an account deleted since: keep recovering the others
            log.error("bavlio: purchase %s not recoverable: %s", reference, type(exc).__name__)
    return booked
