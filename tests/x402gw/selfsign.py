"""Payments signed by the tests themselves (not the SDK client): any signer, any ``from``, any
token, optionally wrapped per ERC-6492."""

from __future__ import annotations

import os
import time
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount

from x402gw import exact_evm as ev
from x402gw.wire import PaymentPayload, PaymentRequirements

ZERO_ADDRESS = "0x" + "00" * 20


def signed_payment(
    signer: LocalAccount,
    offer: PaymentRequirements,
    *,
    from_address: str | None = None,
    erc6492: bool = False,
    domain_name: str | None = None,
    extensions: dict[str, Any] | None = None,
    **fields: Any,
) -> PaymentPayload:
    """``offer`` paid by ``from_address`` (default: the signer), signed by ``signer`` for the
    offer's token; ``erc6492`` wraps the signature with no deployment (factory 0x0).
    ``domain_name`` signs for another EIP-712 name than the offer's; ``extensions`` go on the
    payload. ``fields`` override authorization fields (``to``, ``value``, ``nonce``, ...)."""
    values: dict[str, Any] = {
        "from_address": from_address or signer.address,
        "to": offer.pay_to,
        "value": int(offer.amount),
        "valid_after": 0,
        "valid_before": int(time.time()) + 300,
        "nonce": os.urandom(32),
    }
    values.update(fields)
    auth = ev.Authorization(**values)
    extra = offer.extra or {}
    chain_id = int(offer.network.split(":")[1])
    name = str(extra["name"]) if domain_name is None else domain_name
    domain = ev.Domain(name, str(extra["version"]), chain_id, offer.asset)
    signature = ev.sign_authorization(domain, auth, signer.key)
    if erc6492:
        signature = (
            abi_encode(["address", "bytes", "bytes"], [ZERO_ADDRESS, b"", signature])
            + ev.ERC6492_MAGIC
        )
    return PaymentPayload(
        accepted=offer,
        payload={
            "signature": "0x" + signature.hex(),
            "authorization": {
                "from": auth.from_address,
                "to": auth.to,
                "value": str(auth.value),
                "validAfter": str(auth.valid_after),
                "validBefore": str(auth.valid_before),
                "nonce": "0x" + auth.nonce.hex(),
            },
        },
        extensions=extensions,
    )
