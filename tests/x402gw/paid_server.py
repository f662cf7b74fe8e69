"""A paid app (or the SDK facilitator) as a separate uvicorn process, for crash tests and benchmarks.

Stacks: ``x402gw`` (PaymentMiddleware + LocalFacilitator), ``sdk`` (the SDK middleware with an
HTTP facilitator), ``sdk-facilitator`` (the SDK facilitator core behind HTTP).
``--signer-lock=<path>`` shares the operator key with other processes given the same path.
``X402GW_TEST_SLEEP_AFTER_BROADCAST=<seconds>`` makes x402gw pause right after broadcasting, so a
test can kill the process between broadcast and receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paylab import (
    build_gateway,
    local_facilitator,
    sdk_facilitator_app,
    sdk_protected_app,
)

from x402gw.networks import NETWORKS, Asset
from x402gw.signer_lock import FileSignerLock


def _ledger(value: str) -> Path | str:
    return value if "://" in value else Path(value)


def _app(args: argparse.Namespace) -> Any:
    network = NETWORKS.register(31337, "anvil")
    if args.stack == "sdk-facilitator":
        return sdk_facilitator_app(args.operator_key, args.rpc, network)
    if args.stack == "sdk":
        return sdk_protected_app(args.facilitator_url, args.merchant, network, args.token)
    pause = float(os.environ.get("X402GW_TEST_SLEEP_AFTER_BROADCAST", "0"))

    async def after_broadcast(tx_hash: str) -> None:
        await asyncio.sleep(pause)

    facilitator = local_facilitator(
        args.rpc,
        args.operator_key,
        network,
        after_broadcast=after_broadcast if pause else None,
        signer_lock=FileSignerLock(args.signer_lock) if args.signer_lock else None,
    )
    asset = Asset(network, args.token, "USD Coin", "2")
    return build_gateway(facilitator, args.merchant, network, asset, _ledger(args.ledger)).app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=["x402gw", "sdk", "sdk-facilitator"], default="x402gw")
    for name in (
        "rpc",
        "ledger",
        "token",
        "merchant",
        "operator-key",
        "facilitator-url",
        "signer-lock",
    ):
        parser.add_argument(f"--{name}")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(_app(args), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
