"""x402 payment overhead: x402gw (local verify + settle) vs the official SDK middleware + SDK facilitator.

    .venv/bin/python benchmarks/x402_overhead.py
    .venv/bin/python benchmarks/x402_overhead.py --verifies 200 --requests 60 --levels 1 10 50
    .venv/bin/python benchmarks/x402_overhead.py --workers 2   # x402gw in two processes, one key

One anvil (automine) and one EIP-3009 token serve both stacks in the same run. Each stack guards
the same Starlette route and is served by uvicorn on 127.0.0.1, each server in its own process:

* x402gw: PaymentMiddleware + LocalFacilitator (verification and settlement in process).
* SDK: the SDK's PaymentMiddlewareASGI + HTTPFacilitatorClient -> the SDK facilitator
  (x402Facilitator + FacilitatorWeb3Signer) behind HTTP.

Payments are signed ahead with the SDK client (signing cost is the client's, not the server's).
Reported: verify-only time per call (x402gw: LocalFacilitator.verify; SDK: what its middleware does,
an HTTP /verify to its facilitator), paid round trip p50/p95 at concurrency 1, and settled
payments/s at each concurrency level, with on-chain checks (one successful transaction per 200,
no reverted or duplicated settlement).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "x402gw")]

from lab.anvil import CHAIN_ID, AnvilChain, dev_account  # noqa: E402
from paylab import (  # noqa: E402
    local_facilitator,
    priced_routes,
    sdk_client,
    start_paid_server,
    stop,
)
from x402.http import FacilitatorConfig, HTTPFacilitatorClient  # noqa: E402
from x402.http.utils import encode_payment_signature_header  # noqa: E402
from x402.schemas import PaymentPayload as SdkPaymentPayload  # noqa: E402
from x402.schemas import PaymentRequired as SdkPaymentRequired  # noqa: E402
from x402.schemas import PaymentRequirements as SdkPaymentRequirements  # noqa: E402

from x402gw.networks import NETWORKS, Asset  # noqa: E402
from x402gw.wire import decode_payment_payload, decode_payment_required  # noqa: E402

NETWORK = NETWORKS.register(CHAIN_ID, "anvil")


@dataclass
class Level:
    """Throughput at one concurrency level."""

    concurrency: int
    ok: int
    failed: int
    seconds: float
    mined_ok: int
    reverted: int
    unique_tx: int
    cpu_seconds: float
    anvil_cpu_seconds: float
    client_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server-side CPU (user + system, every process of the stack) per paid request."""
        return 1000.0 * self.cpu_seconds / self.ok if self.ok else 0.0

    @property
    def anvil_ms(self) -> float:
        """The node's CPU per paid request (it shares the machine's cores with the servers)."""
        return 1000.0 * self.anvil_cpu_seconds / self.ok if self.ok else 0.0

    @property
    def client_ms(self) -> float:
        """This load generator's CPU per paid request."""
        return 1000.0 * self.client_cpu_seconds / self.ok if self.ok else 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU consumed so far by ``pids`` (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def sign_many(account: Any, url: str, count: int) -> list[str]:
    """Fetch the route's 402 once, then sign ``count`` fresh payments for its first offer."""
    async with httpx.AsyncClient() as http:
        challenge = (await http.get(url)).headers["payment-required"]
    required = SdkPaymentRequired.model_validate(decode_payment_required(challenge).to_json_dict())
    client = sdk_client(account)
    headers = []
    for _ in range(count):
        payload = await client.create_payment_payload(required)
        headers.append(encode_payment_signature_header(payload))
    return headers


def node_pid(chain: AnvilChain) -> int:
    """The anvil process id."""
    assert chain.pid is not None, "anvil is not running"
    return chain.pid


def block_number(chain: AnvilChain) -> int:
    return int(chain.rpc("eth_blockNumber"), 16)


def mined_since(chain: AnvilChain, start: int) -> list[dict[str, Any]]:
    receipts = []
    for number in range(start + 1, block_number(chain) + 1):
        block = chain.rpc("eth_getBlockByNumber", hex(number), False)
        receipts += [chain.rpc("eth_getTransactionReceipt", h) for h in block["transactions"]]
    return receipts


async def timed_verifies(call: Callable[[], Awaitable[bool]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert await call(), "verification failed"
        samples.append(time.perf_counter() - t0)
    return samples


async def round_trips(
    urls: list[str], headers: list[str], concurrency: int
) -> tuple[list[float], int, float]:
    """Send every pre-signed payment with ``concurrency`` in flight, spread over ``urls`` (the
    worker processes of one stack); (latencies of 200s, failures, wall)."""
    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    # aiohttp: the load generator shares the cores with the servers and anvil, and at c=50
    # httpx's connection pool costs about twice the CPU per request.
    connector = aiohttp.TCPConnector(limit=concurrency + 5)
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int, value: str) -> None:
            nonlocal failures
            async with gate:
                t0 = time.perf_counter()
                url = urls[i % len(urls)]
                async with http.get(url, headers={"PAYMENT-SIGNATURE": value}) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, h) for i, h in enumerate(headers)))
        wall = time.perf_counter() - t0
    return latencies, failures, wall


async def stack_run(
    name: str,
    chain: AnvilChain,
    urls: list[str],
    payer: Any,
    args: argparse.Namespace,
    pids: list[int],
) -> tuple[list[float], list[Level]]:
    url = urls[0]
    headers = await sign_many(payer, url, 20)
    rt, failed, _ = await round_trips(urls, headers, 1)
    assert failed == 0, f"{name}: {failed} sequential payments failed"
    levels = []
    for c in args.levels:
        count = max(args.requests, 2 * c)
        headers = await sign_many(payer, url, count)
        start = block_number(chain)
        cpu0, node0, own0 = cpu_seconds(pids), cpu_seconds([node_pid(chain)]), time.process_time()
        lat, failed, wall = await round_trips(urls, headers, c)
        cpu = cpu_seconds(pids) - cpu0
        node, own = cpu_seconds([node_pid(chain)]) - node0, time.process_time() - own0
        mined = mined_since(chain, start)
        ok_tx = [m for m in mined if int(m["status"], 16) == 1]
        levels.append(
            Level(
                concurrency=c,
                ok=len(lat),
                failed=failed,
                seconds=wall,
                mined_ok=len(ok_tx),
                reverted=len(mined) - len(ok_tx),
                unique_tx=len({m["transactionHash"] for m in mined}),
                cpu_seconds=cpu,
                anvil_cpu_seconds=node,
                client_cpu_seconds=own,
            )
        )
        rt += lat if c == 1 else []
        print(f"  {name} c={c}: {len(lat)} ok, {failed} failed, {wall:.2f}s", file=sys.stderr)
    return rt, levels


async def main(args: argparse.Namespace) -> None:
    chain = AnvilChain()
    chain.start()
    work = Path(tempfile.mkdtemp(prefix="x402bench-"))
    try:
        token = chain.deploy_token("USD Coin", "2", "USDC").address
        payer, ours_op, sdk_op = dev_account(1), dev_account(2), dev_account(3)
        chain.mint(token, payer.address, 10**15)
        merchant = dev_account(4).address
        asset = Asset(NETWORK, token, "USD Coin", "2")

        offer = priced_routes(merchant, NETWORK, asset)[0].requirements()
        common = {"rpc": chain.url, "token": token, "merchant": merchant}
        servers = []
        try:
            ours_options = {
                **common,
                "ledger": args.ledger_url or str(work / "ledger.sqlite3"),
                "operator-key": ours_op.key.hex(),
            }
            if args.workers > 1:  # worker processes on one key and one ledger
                ours_options["signer-lock"] = str(work / "operator.lock")
            ours_workers = [start_paid_server(ours_options) for _ in range(args.workers)]
            servers += [proc for proc, _ in ours_workers]
            ours = ours_workers[0][1]
            fac_proc, sdk_fac = start_paid_server(
                {**common, "stack": "sdk-facilitator", "operator-key": sdk_op.key.hex()},
                probe="/supported",
            )
            servers.append(fac_proc)
            sdk_proc, sdk = start_paid_server(
                {**common, "stack": "sdk", "facilitator-url": sdk_fac}
            )
            servers.append(sdk_proc)

            # verify-only: one valid payment, verified repeatedly (verify never consumes it)
            ours_payment = decode_payment_payload((await sign_many(payer, f"{ours}/paid", 1))[0])
            verifier = local_facilitator(chain.url, ours_op, NETWORK)

            async def ours_verify() -> bool:
                return (await verifier.verify(ours_payment, offer)).is_valid

            sdk_payload = json.loads(
                base64.b64decode((await sign_many(payer, f"{sdk}/paid", 1))[0])
            )
            sdk_p = SdkPaymentPayload.model_validate(sdk_payload)
            sdk_r = SdkPaymentRequirements.model_validate(sdk_payload["accepted"])
            sdk_verifier = HTTPFacilitatorClient(FacilitatorConfig(url=sdk_fac))

            async def sdk_verify() -> bool:
                return (await sdk_verifier.verify(sdk_p, sdk_r)).is_valid

            await timed_verifies(ours_verify, 5)
            await timed_verifies(sdk_verify, 5)
            v_ours = await timed_verifies(ours_verify, args.verifies)
            v_sdk = await timed_verifies(sdk_verify, args.verifies)
            await verifier.aclose()
            await sdk_verifier.aclose()

            rt_ours, lv_ours = await stack_run(
                "x402gw",
                chain,
                [f"{url}/paid" for _, url in ours_workers],
                payer,
                args,
                [proc.pid for proc, _ in ours_workers],
            )
            rt_sdk, lv_sdk = await stack_run(
                "sdk", chain, [f"{sdk}/paid"], payer, args, [sdk_proc.pid, fac_proc.pid]
            )
        finally:
            for proc in servers:
                stop(proc)
    finally:
        chain.stop()

    ms = 1000.0
    workers = f", x402gw in {args.workers} worker processes" if args.workers > 1 else ""
    print(f"\nx402 overhead on anvil (automine), servers in separate processes{workers}")
    print(f"{'':34}{'x402gw':>12}{'SDK':>12}{'SDK/x402gw':>12}")

    def row(label: str, a: float, b: float, unit: str = "ms") -> None:
        ratio = b / a if a else float("inf")
        print(f"{label:34}{a:>10.2f}{unit:>2}{b:>10.2f}{unit:>2}{ratio:>11.2f}x")

    row("verify p50", statistics.median(v_ours) * ms, statistics.median(v_sdk) * ms)
    row("verify mean", statistics.mean(v_ours) * ms, statistics.mean(v_sdk) * ms)
    row("paid round trip p50 (c=1)", pct(rt_ours, 0.5) * ms, pct(rt_sdk, 0.5) * ms)
    row("paid round trip p95 (c=1)", pct(rt_ours, 0.95) * ms, pct(rt_sdk, 0.95) * ms)
    for a, b in zip(lv_ours, lv_sdk, strict=True):
        ratio = a.per_second / b.per_second if b.per_second else float("inf")
        print(
            f"{'settled/s c=' + str(a.concurrency):34}{a.per_second:>12.1f}{b.per_second:>12.1f}"
            f"{ratio:>11.2f}x  (x402gw/SDK)"
        )
    for a, b in zip(lv_ours, lv_sdk, strict=True):
        row(f"server CPU per paid request c={a.concurrency}", a.cpu_ms, b.cpu_ms)
    for a, b in zip(lv_ours, lv_sdk, strict=True):
        row(f"anvil CPU per paid request c={a.concurrency}", a.anvil_ms, b.anvil_ms)
    for a, b in zip(lv_ours, lv_sdk, strict=True):
        row(f"client CPU per paid request c={a.concurrency}", a.client_ms, b.client_ms)
    print("\non-chain checks (per level: 200s, failed, mined ok, reverted, unique tx)")
    for name, levels in (("x402gw", lv_ours), ("SDK", lv_sdk)):
        for lv in levels:
            print(
                f"  {name:7} c={lv.concurrency:<3} ok={lv.ok:<4} failed={lv.failed:<3} "
                f"mined_ok={lv.mined_ok:<4} reverted={lv.reverted:<3} unique_tx={lv.unique_tx}"
            )
    bad = [lv for lv in lv_ours if lv.failed or lv.reverted or lv.mined_ok != lv.ok]
    print("\nx402gw zero failed/duplicated settlements:", "yes" if not bad else f"NO: {bad}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifies", type=int, default=100)
    parser.add_argument("--requests", type=int, default=60, help="payments per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--ledger-url", help="x402gw ledger database URL (default: a fresh SQLite file)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="x402gw server processes sharing the operator key (FileSignerLock) and the ledger",
    )
    asyncio.run(main(parser.parse_args()))
