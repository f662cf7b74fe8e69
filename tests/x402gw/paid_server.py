"""The paid test app as a separate process (uvicorn), for crash-and-restart tests.

``X402GW_TEST_SLEEP_AFTER_BROADCAST=<seconds>`` makes settlement pause right after broadcasting,
so a test can kill the process between broadcast and receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paylab import build_gateway, local_facilitator

from x402gw.networks import NETWORKS, Asset


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("rpc", "ledger", "token", "merchant", "operator-key"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    network = NETWORKS.register(31337, "anvil")
    pause = float(os.environ.get("X402GW_TEST_SLEEP_AFTER_BROADCAST", "0"))

    async def after_broadcast(tx_hash: str) -> None:
        print(f"broadcast {tx_hash}", flush=True)
        await asyncio.sleep(pause)

    facilitator = local_facilitator(
        args.rpc, args.operator_key, network, after_broadcast=after_broadcast if pause else None
    )
    asset = Asset(network, args.token, "USD Coin", "2")
    gateway = build_gateway(facilitator, args.merchant, network, asset, Path(args.ledger))
    uvicorn.run(gateway.app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
