"""web3 edge for exact-EVM payments: fetch the facts the rules need, simulate, and settle on chain.

Everything here does I/O; every decision is delegated to :mod:`x402gw.exact_evm`. Transport
failures become :class:`ChainUnavailable`, contract reverts :class:`SettlementReverted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import rlp  # type: ignore[import-untyped]
from aiohttp import ClientError, ClientResponseError
from cachetools import TTLCache
from coincurve import PrivateKey
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3._utils.error_formatters_utils import raise_contract_logic_error_on_revert
from web3.exceptions import ContractLogicError
from web3.types import RPCResponse

from x402gw import exact_evm
from x402gw._abi import address_word, bytes32_word, bytes_tail, uint_word
from x402gw._jsonrpc import JsonRpcTransport, Redactor
from x402gw.errors import (
    ChainError,
    ChainUnavailable,
    GasCapExceeded,
    NotBroadcast,
    RpcError,
    SettlementPending,
    SettlementReverted,
    TransferEventMissing,
)
from x402gw.exact_evm import Candidate, ChainFacts, Diagnosis
from x402gw.signer_lock import SignerLock

_T = TypeVar("_T")
log = logging.getLogger("x402gw.chain")
_TRANSPORT_ERRORS: Final = (
    ClientError,
    OSError,
    asyncio.TimeoutError,
    json.JSONDecodeError,  # a body that is not JSON at all (proxy error pages and the like)
)
_NONCE_RETRIES: Final = 3
# The node already holds this very transaction: geth/erigon, anvil/reth, nethermind wording.
_ALREADY_KNOWN: Final = ("already known", "already imported", "alreadyknown")
_NONCE_CLASH: Final = (
    "nonce too low",
    "replacement transaction underpriced",
    *_ALREADY_KNOWN,
)
_FEE_TOO_LOW: Final = "less than block base fee"  # geth, anvil, erigon, reth wording
_KNOWN_MAX: Final = 10_000  # bound on the assets and payer codes a FactGatherer remembers
PAYER_CODE_TTL: Final = 120.0
"""Seconds a contract payer's code is reused (EIP-7702 delegations may change it)."""
_FEE_TTL: Final = 1.0  # seconds fee data is reused; 2 x base fee absorbs ~5 blocks of increases
_HEX_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_AUTHORIZATION_USED_TOPIC: Final = keccak(b"AuthorizationUsed(address,bytes32)")
_AUTHORIZATION_CANCELED_TOPIC: Final = keccak(b"AuthorizationCanceled(address,bytes32)")
AUTHORIZATION_USED: Final = "used"
AUTHORIZATION_CANCELED: Final = "canceled"


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


_TWA_VRS: Final = _selector(
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
_TWA_BYTES: Final = _selector(
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
)
_BYTES_OFFSET: Final = uint_word(7 * 32)  # the bytes tail follows the 7 head words
_QUANTITY: Final = re.compile(r"0x[0-9a-fA-F]{1,64}")
_BALANCE_OF: Final = _selector("balanceOf(address)")
_AUTHORIZATION_STATE: Final = _selector("authorizationState(address,bytes32)")
_NAME: Final = _selector("name()")
_VERSION: Final = _selector("version()")
_IS_VALID_SIGNATURE: Final = _selector("isValidSignature(bytes32,bytes)")
_TRY_AGGREGATE: Final = _selector("tryAggregate(bool,(address,bytes)[])")
_ERROR_STRING: Final = _selector("Error(string)")
MULTICALL3: Final = "0xcA11bde05977b3631167028862bE2a173976CA11"
"""Canonical Multicall3 address; used to simulate deploy-then-transfer for ERC-6492 wallets."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The parts of a transaction receipt reconciliation needs."""

    tx_hash: str
    status: int
    block_number: int
    gas_used: int
    logs: tuple[Mapping[str, Any], ...]


def transfer_calldata(candidate: Candidate) -> bytes:
    """``transferWithAuthorization`` calldata: the v,r,s overload for 65-byte signatures, else bytes."""
    return _transfer_calldata(candidate)


@functools.lru_cache(maxsize=1024)  # verify simulates and settle sends the same calldata
def _transfer_calldata(candidate: Candidate) -> bytes:
    auth = candidate.authorization
    head = (
        address_word(auth.from_address)
        + address_word(auth.to)
        + uint_word(auth.value)
        + uint_word(auth.valid_after)
        + uint_word(auth.valid_before)
        + bytes32_word(auth.nonce)
    )  # ABI-encoded by hand: the same bytes as eth_abi.encode (the tests check), much faster
    sig = candidate.inner_signature
    if len(sig) == 65:
        v = sig[64] + 27 if sig[64] < 27 else sig[64]
        return _TWA_VRS + head + uint_word(v, 8) + sig[:32] + sig[32:64]
    return _TWA_BYTES + head + _BYTES_OFFSET + bytes_tail(sig)


def sign_dynamic_fee_transaction(
    key: PrivateKey,
    *,
    chain_id: int,
    nonce: int,
    max_priority_fee: int,
    max_fee: int,
    gas: int,
    to: str,
    data: bytes,
    value: int = 0,
) -> bytes:
    """A signed EIP-1559 (type 2) raw transaction, no access list.

    Byte-identical to eth_account's ``sign_transaction`` (the tests check that), at a fifth of
    its CPU: the settlement hot path signs one per payment.
    """
    for name, number in (
        ("chain_id", chain_id),
        ("nonce", nonce),
        ("max_priority_fee", max_priority_fee),
        ("max_fee", max_fee),
        ("gas", gas),
        ("value", value),
    ):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**256:
            raise ValueError(f"{name} must be a uint256 int, got {number!r}")
    if not isinstance(to, str) or not _HEX_ADDRESS.fullmatch(to):
        raise ValueError(f"to must be a 0x-prefixed 20-byte hex address, got {to!r}")
    fields = [
        chain_id, nonce, max_priority_fee, max_fee, gas, bytes.fromhex(to[2:]), value, bytes(data), []
    ]  # fmt: skip
    signature = key.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    return b"\x02" + bytes(rlp.encode([*fields, signature[64], r, s]))


class ChainClient:
    """Async JSON-RPC reads for one EVM chain.

    Every call goes through :class:`JsonRpcTransport` (no web3 provider: its layers cost more
    CPU than the calls, and it logs the full URL). Error messages name the node as
    :attr:`endpoint` (scheme, host, port) only: the rest of an RPC URL often holds a provider key.
    """

    def __init__(self, rpc_url: str, *, timeout: float = 10.0, retries: int = 2) -> None:
        self.transport = JsonRpcTransport(rpc_url, timeout=timeout, retries=retries)
        self.redact: Redactor = self.transport.redact
        self.endpoint = self.redact.endpoint

    async def aclose(self) -> None:
        """Close the transport's HTTP sessions."""
        await self.transport.aclose()

    async def request(self, method: str, params: list[Any], *, reverts: bool = False) -> Any:
        """One JSON-RPC call.

        With ``reverts``, a revert raises :class:`SettlementReverted` as web3
        would classify it; other error replies raise :class:`RpcError`.
        """
        try:
            response = await self.transport.call(method, params)
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(exc) from None
        return self._result(response, reverts)

    async def request_batch(self, calls: list[tuple[str, list[Any]]]) -> list[RPCResponse]:
        """Several JSON-RPC calls in one HTTP round trip; the raw replies, in call order
        (matched by id: a node may answer a batch in any order).

        Each reply is read by ``_result``, which classifies errors as :meth:`request` does.
        """
        try:
            replies = await self.transport.batch(calls)
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(exc) from None
        if not isinstance(replies, list) or len(replies) != len(calls):
            log.warning(
                "RPC %s answered a batch with %s",
                self.endpoint,
                self.redact(str(replies)[:4096])[:200],
            )
            raise ChainUnavailable("RPC answered one reply to a batch")
        return replies

    def _unreachable(self, exc: BaseException) -> ChainUnavailable:
        """The error for a transport failure: its kind (and HTTP status) only, since aiohttp's
        texts name the full URL; the redacted text goes to the log."""
        kind = type(exc).__name__
        if isinstance(exc, ClientResponseError):
            kind = f"{kind}: {exc.status}"
        log.warning(
            "RPC %s unreachable: %s", self.endpoint, self.redact(f"{type(exc).__name__}: {exc}")
        )
        return ChainUnavailable(f"RPC unreachable: {kind} ({self.endpoint})")

    def _result(self, response: Any, reverts: bool) -> Any:
        """:func:`_result` with the URL's secret parts removed from any error text."""
        return _result(response, reverts, self.redact)

    async def eoa_facts(
        self, candidate: Candidate, *, asset_code: bool, simulate: bool, sender: str | None
    ) -> tuple[bytes, bytes | None, tuple[str | None, bool] | None]:
        """The payer's code, the asset's code (if ``asset_code``) and the transfer's simulation
        (if ``simulate``; as :meth:`simulate_transfer` answers), in one batched round trip."""
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getCode", [_hex_address(candidate.payer), "latest"])
        ]
        if asset_code:
            calls.append(("eth_getCode", [_hex_address(candidate.token), "latest"]))
        if simulate:
            tx = {
                "to": _hex_address(candidate.token),
                "data": "0x" + transfer_calldata(candidate).hex(),
            }
            if sender is not None:
                tx["from"] = _hex_address(sender)
            calls.append(("eth_call", [tx, "latest"]))
        replies = await self.request_batch(calls)
        payer_code = _hex_bytes(self._result(replies[0], False))
        token_code = _hex_bytes(self._result(replies[1], False)) if asset_code else None
        simulation: tuple[str | None, bool] | None = None
        if simulate:
            try:
                _hex_bytes(self._result(replies[-1], True))
                simulation = (None, True)
            except SettlementReverted as exc:
                simulation = (exc.reason, True)
            except RpcError as exc:
                simulation = (str(exc), False)
        return payer_code, token_code, simulation

    async def chain_id(self) -> int:
        """The chain id the node reports."""
        return int(await self.request("eth_chainId", []), 16)

    async def get_code(self, address: str) -> bytes:
        """Deployed bytecode at ``address`` (empty for an EOA)."""
        return _hex_bytes(await self.request("eth_getCode", [_hex_address(address), "latest"]))

    async def eth_balance(self, address: str) -> int:
        """Native balance in wei."""
        return int(await self.request("eth_getBalance", [_hex_address(address), "latest"]), 16)

    async def call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        """``eth_call`` against the pending state; reverts raise :class:`SettlementReverted`."""
        tx = {"to": _hex_address(to), "data": "0x" + data.hex()}
        if sender is not None:
            tx["from"] = _hex_address(sender)
        return _hex_bytes(await self.request("eth_call", [tx, "latest"], reverts=True))

    async def token_balance(self, token: str, owner: str) -> int:
        """ERC-20 ``balanceOf(owner)``."""
        out = await self.call(token, _BALANCE_OF + abi_encode(["address"], [owner]))
        return int(abi_decode(["uint256"], out)[0])

    async def authorization_state(self, token: str, authorizer: str, nonce: bytes) -> bool:
        """EIP-3009 ``authorizationState``: True once the nonce was used or cancelled."""
        out = await self.call(
            token, _AUTHORIZATION_STATE + abi_encode(["address", "bytes32"], [authorizer, nonce])
        )
        return bool(abi_decode(["bool"], out)[0])

    async def authorization_tx(
        self, token: str, authorizer: str, nonce: bytes, *, lookback_blocks: int = 50_000
    ) -> str | None:
        """The hash of the transaction that used ``(authorizer, nonce)``, from the token's
        ``AuthorizationUsed`` log in the last ``lookback_blocks`` blocks; None if not found."""
        found = await self.authorization_event(
            token, authorizer, nonce, lookback_blocks=lookback_blocks, cancels=False
        )
        return None if found is None else found[1]

    async def authorization_event(
        self,
        token: str,
        authorizer: str,
        nonce: bytes,
        *,
        lookback_blocks: int = 50_000,
        cancels: bool = True,
    ) -> tuple[str, str] | None:
        """(:data:`AUTHORIZATION_USED` or :data:`AUTHORIZATION_CANCELED`, transaction hash) from
        the token's ``AuthorizationUsed`` (or, with ``cancels``, ``AuthorizationCanceled``) log
        for ``(authorizer, nonce)`` in the last ``lookback_blocks`` blocks; None if not found."""
        kinds = {_AUTHORIZATION_USED_TOPIC: AUTHORIZATION_USED}
        if cancels:
            kinds[_AUTHORIZATION_CANCELED_TOPIC] = AUTHORIZATION_CANCELED
        latest = int(await self.request("eth_blockNumber", []), 16)
        query = {
            "address": _hex_address(token),
            "fromBlock": hex(max(0, latest - lookback_blocks)),
            "toBlock": hex(latest),
            "topics": [
                ["0x" + topic.hex() for topic in kinds],
                "0x" + address_word(authorizer).hex(),
                "0x" + nonce.hex(),
            ],
        }
        logs = await self.request("eth_getLogs", [query])
        if not isinstance(logs, list):
            raise ChainUnavailable(f"RPC answered {type(logs).__name__} to eth_getLogs")
        for entry in logs:
            if not isinstance(entry, Mapping) or entry.get("removed"):
                continue
            tx_hash, topics = entry.get("transactionHash"), entry.get("topics")
            if isinstance(tx_hash, str) and isinstance(topics, list) and topics:
                kind = kinds.get(_hex_bytes(topics[0]))
                if kind is not None:
                    return kind, "0x" + _hex_bytes(tx_hash).hex()
        return None

    async def token_domain(self, token: str) -> tuple[str, str]:
        """The token's ``name()`` and ``version()`` (its EIP-712 domain strings)."""
        name = abi_decode(["string"], await self.call(token, _NAME))[0]
        version = abi_decode(["string"], await self.call(token, _VERSION))[0]
        return str(name), str(version)

    async def is_valid_signature(self, wallet: str, digest: bytes, signature: bytes) -> bool:
        """EIP-1271: does ``wallet`` accept ``signature`` over ``digest``? A revert counts as no."""
        data = _IS_VALID_SIGNATURE + abi_encode(["bytes32", "bytes"], [digest, signature])
        try:
            out = await self.call(wallet, data)
        except SettlementReverted:
            return False
        return out[:4] == exact_evm.EIP1271_MAGIC

    async def simulate_transfer(
        self, candidate: Candidate, *, sender: str | None = None
    ) -> tuple[str | None, bool]:
        """``eth_call`` the transfer: (None, True) on success, else (error text, was it a revert)."""
        try:
            await self.call(candidate.token, transfer_calldata(candidate), sender=sender)
        except SettlementReverted as exc:
            return exc.reason, True
        except ChainUnavailable:
            raise
        except RpcError as exc:
            return str(exc), False
        return None, True

    async def simulate_counterfactual(
        self, candidate: Candidate, *, sender: str | None = None
    ) -> tuple[str | None, bool]:
        """Deploy-then-transfer in one Multicall3 ``eth_call``, for ERC-6492 wallets not yet deployed."""
        wrapped = candidate.erc6492
        if wrapped is None:
            raise ValueError("candidate carries no ERC-6492 wrapper")
        if not await self.get_code(MULTICALL3):
            return "Multicall3 is not deployed; cannot simulate an ERC-6492 wallet", False
        calls = [
            (wrapped.factory, wrapped.factory_calldata),
            (candidate.token, transfer_calldata(candidate)),
        ]
        data = _TRY_AGGREGATE + abi_encode(["bool", "(address,bytes)[]"], [False, calls])
        try:
            out = await self.call(MULTICALL3, data, sender=sender)
        except SettlementReverted as exc:
            return exc.reason, True
        except ChainUnavailable:
            raise
        except RpcError as exc:
            return str(exc), False
        results = abi_decode(["(bool,bytes)[]"], out)[0]
        if len(results) != len(calls):
            return "Multicall3 returned the wrong number of results", False
        ok, returned = results[1]
        return (None, True) if ok else (_revert_reason(bytes(returned)), True)

    async def diagnose(self, candidate: Candidate) -> Diagnosis:
        """The reads the SDK's Multicall3 probe makes, each allowed to fail on its own."""
        token, auth = candidate.token, candidate.authorization
        used = await _maybe(self.authorization_state(token, auth.from_address, auth.nonce))
        name = await _maybe(self.call(token, _NAME))
        version = await _maybe(self.call(token, _VERSION))
        balance = await _maybe(self.token_balance(token, auth.from_address))
        return Diagnosis(
            authorization_used=used,
            token_name=_decode_string(name),
            token_version=_decode_string(version),
            balance=balance,
        )

    async def latest_block_timestamp(self) -> int:
        """The latest block's timestamp (unix seconds): the chain's own clock."""
        block = await self.request("eth_getBlockByNumber", ["latest", False])
        stamp = block.get("timestamp") if isinstance(block, dict) else None
        if isinstance(stamp, str) and _QUANTITY.fullmatch(stamp):
            return int(stamp, 16)
        raise RpcError("eth_getBlockByNumber answered without a block timestamp")

    async def get_receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt of ``tx_hash``, or None while it is unknown or unmined (for reconciliation)."""
        raw = await self.request("eth_getTransactionReceipt", [tx_hash])
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ChainUnavailable(f"RPC answered {type(raw).__name__} for a receipt")
        if raw.get("blockNumber") is None:  # some nodes answer pending transactions this way
            return None
        try:
            return _raw_receipt(raw)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning(
                "RPC %s answered a malformed receipt: %s", self.endpoint, self.redact(repr(exc))
            )
            raise ChainUnavailable(
                f"RPC answered a malformed receipt ({type(exc).__name__})"
            ) from None

    async def wait_for_receipt(
        self, tx_hash: str, wait_seconds: float, poll: float = 0.05
    ) -> Receipt:
        """Ask at once (an automining node has it already), then poll with backoff up to ``poll``;
        raises :class:`SettlementPending` after ``wait_seconds``."""
        deadline = time.monotonic() + wait_seconds
        delay = min(0.005, poll)
        while True:
            receipt = await self.get_receipt(tx_hash)
            if receipt is not None:
                return receipt
            left = deadline - time.monotonic()
            if left <= 0:
                raise SettlementPending(tx_hash)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, poll)


class FactGatherer:
    """The chain facts :func:`exact_evm.check_onchain` consults, read in the SDK's order with as
    few round trips as that order allows: the one path from the chain to the rules.

    For an EOA payer, its code, the asset's code and the simulation are independent reads, sent
    as one batch (the rules still consult them in order). Contract wallets and ERC-6492
    signatures go step by step, EIP-1271 first. Positive asset-code answers are remembered, and
    a contract payer's code for ``payer_code_ttl`` seconds from its read (EIP-7702 may change
    it); an EOA's empty code never is (code can appear at any block). ``sender`` is the
    simulation's ``from`` (the account that will settle).
    """

    def __init__(
        self,
        client: ChainClient,
        *,
        sender: str | None = None,
        allowed_factories: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        payer_code_ttl: float = PAYER_CODE_TTL,
    ) -> None:
        self.client = client
        self.sender = sender
        self.allowed_factories = tuple(allowed_factories)
        self._assets: set[str] = set()  # lower-case tokens found to hold code
        self._payer_codes: TTLCache[str, bytes] = TTLCache(
            maxsize=_KNOWN_MAX, ttl=payer_code_ttl, timer=clock
        )

    async def gather(self, candidate: Candidate, *, simulate: bool = True) -> ChainFacts:
        """The facts about ``candidate``; ``simulate=False`` when settling (the SDK does not
        re-simulate there: the gas estimate does). Raises :class:`ChainUnavailable` or
        :class:`RpcError` when a read that decides the outcome fails."""
        known_code = self._payer_codes.get(candidate.payer.lower())
        if candidate.erc6492 is not None or known_code is not None:
            return await self._step_by_step(candidate, simulate, known_code)
        asset_known = candidate.token.lower() in self._assets
        payer_code, token_code, simulation = await self.client.eoa_facts(
            candidate, asset_code=not asset_known, simulate=simulate, sender=self.sender
        )
        if token_code:
            self._note_asset(candidate.token)
        if payer_code:  # a contract after all: EIP-1271 comes before everything else
            self._note_payer(candidate.payer, payer_code)
            return await self._step_by_step(candidate, simulate, payer_code)
        refused = self._refused(candidate, b"", None)
        if refused is not None:
            return refused
        deployed = asset_known or bool(token_code)
        if not deployed or not simulate:
            return ChainFacts(payer_code=b"", asset_deployed=deployed, simulated=False)
        assert simulation is not None  # asked for, since simulate is true
        return await self._simulated(candidate, b"", None, simulation)

    async def _step_by_step(
        self, candidate: Candidate, simulate: bool, code: bytes | None
    ) -> ChainFacts:
        client = self.client
        if code is None:
            code = await client.get_code(candidate.payer)
            if code:
                self._note_payer(candidate.payer, code)
        eip1271: bool | None = None
        if code:
            eip1271 = await client.is_valid_signature(
                candidate.payer, candidate.digest, candidate.inner_signature
            )
        refused = self._refused(candidate, code, eip1271)
        if refused is not None:
            return refused
        deployed = candidate.token.lower() in self._assets or bool(
            await client.get_code(candidate.token)
        )
        if deployed:
            self._note_asset(candidate.token)
        if not deployed or not simulate:
            return ChainFacts(
                payer_code=code, eip1271_valid=eip1271, asset_deployed=deployed, simulated=False
            )
        wrapped = candidate.erc6492
        if wrapped is not None and wrapped.has_deployment_info and not code:
            simulation = await client.simulate_counterfactual(candidate, sender=self.sender)
        else:
            simulation = await client.simulate_transfer(candidate, sender=self.sender)
        return await self._simulated(candidate, code, eip1271, simulation)

    def _refused(
        self, candidate: Candidate, code: bytes, eip1271: bool | None
    ) -> ChainFacts | None:
        """Facts that stop at the signature when the rules refuse it: nothing more is read.

        Should :func:`exact_evm.check_onchain` be given other factories than these, the
        simulation error makes it fail closed.
        """
        if exact_evm.check_signature(candidate, code, eip1271, self.allowed_factories) is None:
            return None
        return ChainFacts(
            payer_code=code,
            eip1271_valid=eip1271,
            simulation_error="not simulated: signature refused",
            simulation_reverted=False,
        )

    async def _simulated(
        self,
        candidate: Candidate,
        code: bytes,
        eip1271: bool | None,
        simulation: tuple[str | None, bool],
    ) -> ChainFacts:
        """Facts with the simulation's outcome, diagnosed when no revert reason explains it."""
        error, reverted = simulation
        diagnosis = None
        if error is not None and (not reverted or exact_evm.map_revert(error) is None):
            diagnosis = await self.client.diagnose(candidate)
        return ChainFacts(
            payer_code=code,
            eip1271_valid=eip1271,
            simulation_error=error,
            simulation_reverted=reverted,
            diagnosis=diagnosis,
        )

    def _note_asset(self, token: str) -> None:
        if len(self._assets) < _KNOWN_MAX:  # bounded: a payment may name any contract
            self._assets.add(token.lower())

    def _note_payer(self, payer: str, code: bytes) -> None:
        self._payer_codes[payer.lower()] = code


class NonceManager:
    """Hands out consecutive account nonces under a lock; resyncs from the node when told to.

    ``shared``: other processes send from the same account (under a :class:`SignerLock`), so
    every allocation reads the node's pending count instead of counting locally.
    """

    def __init__(self, client: ChainClient, address: str, *, shared: bool = False) -> None:
        self._client = client
        self._address = _addr(address)
        self._next: int | None = None
        self._shared = shared
        self.lock = asyncio.Lock()

    async def allocate(self) -> int:
        """Next nonce; call with :attr:`lock` held so allocation and broadcast stay in order."""
        if self._next is None or self._shared:
            count = await self._client.request(
                "eth_getTransactionCount", [self._address, "pending"]
            )
            self._next = int(count, 16)
        nonce = self._next
        self._next += 1
        return nonce

    def invalidate(self) -> None:
        """Forget the local counter; the next allocation re-reads the pending count."""
        self._next = None


SentHook = Callable[[str, bool], Awaitable[None]]
"""``on_sent(tx_hash, mined)`` of :meth:`Settler.settle`."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """A mined, successful settlement."""

    tx_hash: str
    receipt: Receipt


class Settler:
    """Sends ``transferWithAuthorization`` from an operator key and waits for a checked receipt."""

    def __init__(
        self,
        client: ChainClient,
        operator: LocalAccount,
        *,
        receipt_timeout: float = 120.0,
        priority_fee: int | None = None,
        signer_lock: SignerLock | None = None,
    ) -> None:
        self.client = client
        self.operator = operator
        self.signer_lock = signer_lock
        self.receipt_timeout = receipt_timeout
        self._priority_fee = priority_fee
        self._chain_id: int | None = None
        self._fee_cache: tuple[float, int, int] | None = None  # (fetched at, max fee, tip)
        self._fee_lock = asyncio.Lock()
        self._key = PrivateKey(bytes(operator.key))
        self.nonces = NonceManager(client, operator.address, shared=signer_lock is not None)

    @property
    def address(self) -> str:
        """The operator address that pays gas."""
        return str(self.operator.address)

    async def settle(
        self,
        candidate: Candidate,
        *,
        max_gas: int | None = None,
        on_sent: SentHook | None = None,
    ) -> Settlement:
        """Deploy a counterfactual wallet if needed, transfer, and check the receipt: a success
        carrying the authorization's own Transfer log, else :class:`SettlementReverted` or
        :class:`TransferEventMissing` (with the hash).

        ``max_gas`` caps the transfer (see :meth:`send`); the deployment goes through an
        allow-listed factory and is not capped. ``on_sent(tx_hash, mined)`` runs once the
        transfer is broadcast, before waiting for its receipt (``mined``: the node had the
        receipt at once, as an automining node does).
        """
        wrapped = candidate.erc6492
        if (
            wrapped is not None
            and wrapped.has_deployment_info
            and not await self.client.get_code(candidate.payer)
        ):
            deploy_hash = await self.send(wrapped.factory, wrapped.factory_calldata)
            deployed = await self.client.wait_for_receipt(deploy_hash, self.receipt_timeout)
            if deployed.status != 1:
                raise SettlementReverted("smart_wallet_deployment_failed", tx_hash=deploy_hash)
        tx_hash = await self.send(candidate.token, transfer_calldata(candidate), max_gas=max_gas)
        receipt = await self.client.get_receipt(tx_hash)
        if on_sent is not None:
            await on_sent(tx_hash, receipt is not None)
        if receipt is None:
            receipt = await self.client.wait_for_receipt(tx_hash, self.receipt_timeout)
        if receipt.status != 1:
            raise SettlementReverted(exact_evm.TRANSACTION_FAILED, tx_hash=tx_hash)
        if not exact_evm.transfer_log_matches(
            receipt.logs, candidate.token, candidate.authorization
        ):
            raise TransferEventMissing(tx_hash)
        return Settlement(tx_hash=tx_hash, receipt=receipt)

    async def send(self, to: str, data: bytes, *, max_gas: int | None = None) -> str:
        """Estimate (reverts raise here, costing no gas), price with EIP-1559 fees, sign and broadcast.

        The gas limit is the estimate x 1.2; with ``max_gas``, an estimate above it raises
        :class:`GasCapExceeded` before anything is signed, and the limit never exceeds it.
        """
        client = self.client
        call = {"from": self.address.lower(), "to": _hex_address(to), "data": "0x" + data.hex()}
        try:
            gas = int(await client.request("eth_estimateGas", [call], reverts=True), 16)
            limit = gas * 6 // 5
            if max_gas is not None:
                if gas > max_gas:
                    raise GasCapExceeded(gas, max_gas)
                limit = min(limit, max_gas)
            max_fee, tip = await self._fees()
            if self._chain_id is None:
                self._chain_id = await client.chain_id()
        except (ChainUnavailable, RpcError) as exc:  # nothing was signed or sent yet
            raise NotBroadcast(f"settlement not sent: {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:  # a node answering nonsense
            raise NotBroadcast(f"settlement not sent: unusable node answer ({exc!r})") from exc
        for _attempt in range(_NONCE_RETRIES):
            async with self.nonces.lock, self._across_processes():
                nonce = await self.nonces.allocate()
                raw = sign_dynamic_fee_transaction(
                    self._key,
                    chain_id=self._chain_id,
                    nonce=nonce,
                    max_priority_fee=tip,
                    max_fee=max_fee,
                    gas=limit,
                    to=call["to"],
                    data=data,
                )
                try:
                    sent = await client.request("eth_sendRawTransaction", ["0x" + raw.hex()])
                except RpcError as exc:
                    self.nonces.invalidate()
                    text = str(exc).lower()
                    if any(clash in text for clash in _NONCE_CLASH):
                        # A broadcast re-sent after a dropped connection meets itself: the node
                        # already holds (or mined) this very transaction, so it was sent.
                        tx_hash = "0x" + keccak(raw).hex()
                        if any(k in text for k in _ALREADY_KNOWN) or await self._known(tx_hash):
                            return tx_hash
                        continue
                    if _FEE_TOO_LOW in text and self._fee_cache is not None:
                        self._fee_cache = None  # the base fee outran the cached price: re-read
                        max_fee, tip = await self._fees()
                        continue
                    raise
                except BaseException:
                    self.nonces.invalidate()
                    raise
            return "0x" + _hex_bytes(sent).hex()
        raise ChainError(f"nonce kept colliding after {_NONCE_RETRIES} attempts")

    def _across_processes(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self.signer_lock is None:
            return contextlib.nullcontext()
        return self.signer_lock.hold()

    async def _known(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction ``tx_hash`` (pending or mined)."""
        return await self.client.request("eth_getTransactionByHash", [tx_hash]) is not None

    async def _fees(self) -> tuple[int, int]:
        """(max fee, tip): 2 x latest base fee + tip, fetched at most once per :data:`_FEE_TTL`."""
        async with self._fee_lock:  # concurrent sends share one fetch
            cached = self._fee_cache
            if cached is not None and time.monotonic() - cached[0] < _FEE_TTL:
                return cached[1], cached[2]
            block = await self.client.request("eth_getBlockByNumber", ["latest", False])
            base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
            tip = (
                self._priority_fee
                if self._priority_fee is not None
                else int(await self.client.request("eth_maxPriorityFeePerGas", []), 16)
            )
            self._fee_cache = (time.monotonic(), 2 * base_fee + tip, tip)
            return 2 * base_fee + tip, tip


# --------------------------------------------------------------------------------------------


async def _maybe(awaitable: Awaitable[_T]) -> _T | None:
    try:
        return await awaitable
    except (SettlementReverted, RpcError):
        return None


def _decode_string(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(abi_decode(["string"], raw)[0])
    except Exception:  # eth_abi raises several decoding errors for non-string returns
        return None


def _revert_reason(data: bytes) -> str:
    if data[:4] == _ERROR_STRING:
        try:
            return f"execution reverted: {abi_decode(['string'], data[4:])[0]}"
        except Exception:  # eth_abi raises several decoding errors for malformed payloads
            pass
    return f"execution reverted: 0x{data.hex()}"


def _revert_text(exc: ContractLogicError) -> str:
    return str(exc.message) if exc.message else str(exc)


def _result(response: Any, reverts: bool, redact: Callable[[str], str] = str) -> Any:
    """The result of one JSON-RPC reply; an error raises as :meth:`ChainClient.request` says.

    Error texts pass through ``redact`` (a node may echo the request URL) and are cut short.
    """
    if not isinstance(response, Mapping):
        raise ChainUnavailable(f"RPC answered {type(response).__name__}, not an object")
    error = response.get("error")
    if error is None:
        if "result" not in response:
            raise ChainUnavailable("RPC reply has neither result nor error")
        return response["result"]
    if reverts and isinstance(error, Mapping):
        try:
            raise_contract_logic_error_on_revert(cast(RPCResponse, response))
        except ContractLogicError as exc:
            raise SettlementReverted(redact(_revert_text(exc))[:500]) from None
    if isinstance(error, Mapping):  # code and message only: ``data`` may be anything
        raise RpcError(f"RPC error: {error.get('code')}: {redact(str(error.get('message')))[:300]}")
    raise RpcError(f"RPC error: {redact(str(error)[:4096])[:300]}")


@functools.lru_cache(maxsize=4096)
def _addr(address: str) -> ChecksumAddress:
    return to_checksum_address(address)  # a keccak each time, and the same few addresses recur


def _hex_address(address: str) -> str:
    """Lower-case hex for JSON-RPC (no checksum work); anything else is validated as before."""
    if isinstance(address, str) and _HEX_ADDRESS.fullmatch(address):
        return address.lower()
    return _addr(address).lower()


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainUnavailable(f"RPC answered {type(value).__name__} where hex data was expected")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ChainUnavailable(f"RPC answered malformed hex ({len(value)} characters)") from None


def _raw_receipt(raw: Mapping[str, Any]) -> Receipt:
    logs = tuple(
        {
            "address": _addr(log["address"]),
            "topics": [_hex_bytes(t) for t in log["topics"]],
            "data": _hex_bytes(log["data"]),
        }
        for log in raw["logs"]
    )
    return Receipt(
        tx_hash=raw["transactionHash"].lower(),
        status=int(raw["status"], 16),
        block_number=int(raw["blockNumber"], 16),
        gas_used=int(raw["gasUsed"], 16),
        logs=logs,
    )
