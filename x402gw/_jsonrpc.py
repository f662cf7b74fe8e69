"""A thin JSON-RPC 2.0 client over HTTP (aiohttp) for the settlement hot path.

web3's ``AsyncHTTPProvider`` costs more CPU per call than the call itself: a request-caching
wrapper, a session manager and a threading lock taken through the default executor (a thread
hop on every call). This module posts the JSON itself on one keep-alive session per event loop.

Policy kept from the provider configuration it replaces: ``ClientTimeout(total=timeout)``, a
non-2xx status is a transport failure, and ``retries`` attempts (web3 counts attempts, not
re-tries) on :class:`aiohttp.ClientError` / :class:`TimeoutError` for the methods web3 retries,
sleeping ``backoff * 2**attempt`` between them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from x402gw.errors import ChainUnavailable

_HEADERS: Final = {"Content-Type": "application/json"}
# Methods a transport failure may re-send (web3's default retry allowlist, as used today).
# eth_sendRawTransaction is safe to re-send: the node answers with the same hash or "already
# known" for an identical raw transaction, which Settler.send reads as sent.
_RETRY_PREFIXES: Final = frozenset({"admin", "net", "txpool", "testing", "evm"})
_RETRY_METHODS: Final = frozenset(
    {
        "eth_protocolVersion", "eth_syncing", "eth_chainId", "eth_gasPrice", "eth_accounts",
        "eth_blockNumber", "eth_getBalance", "eth_getStorageAt", "eth_getProof", "eth_getCode",
        "eth_getBlockByNumber", "eth_getBlockByHash", "eth_getBlockTransactionCountByNumber",
        "eth_getBlockTransactionCountByHash", "eth_getUncleCountByBlockNumber",
        "eth_getUncleCountByBlockHash", "eth_getTransactionByHash",
        "eth_getTransactionByBlockHashAndIndex", "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionReceipt", "eth_getTransactionCount", "eth_getRawTransactionByHash",
        "eth_call", "eth_estimateGas", "eth_createAccessList", "eth_maxPriorityFeePerGas",
        "eth_newBlockFilter", "eth_newPendingTransactionFilter", "eth_newFilter",
        "eth_getFilterChanges", "eth_getFilterLogs", "eth_getLogs", "eth_uninstallFilter",
        "eth_getCompilers", "eth_getWork", "eth_sign", "eth_signTypedData",
        "eth_sendRawTransaction",
    }
)  # fmt: skip


def retryable(method: str) -> bool:
    """Whether a transport failure may re-send ``method``."""
    return method in _RETRY_METHODS or method.split("_", 1)[0] in _RETRY_PREFIXES


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonRpcTransport:
    """JSON-RPC over HTTP POST to one URL; one pooled :class:`ClientSession` per event loop.

    Transport failures raise :class:`aiohttp.ClientError`, :class:`TimeoutError` or
    :class:`OSError` (callers classify them); a body that is not JSON raises
    :class:`ChainUnavailable`. Replies are returned as decoded, error objects included.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.05,
        connections: int = 64,
    ) -> None:
        self.url = url
        self._timeout = ClientTimeout(total=timeout)
        self._attempts = max(retries, 1)
        self._backoff = backoff
        self._connections = connections
        self._ids = itertools.count(1)
        self._sessions: dict[asyncio.AbstractEventLoop, ClientSession] = {}

    def _session(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # Forget sessions of loops that are gone: they cannot be closed from here, and
            # their idle sockets are closed when the transports are collected.
            for other in [other for other in self._sessions if other.is_closed()]:
                del self._sessions[other]
            session = ClientSession(
                connector=TCPConnector(limit=self._connections),
                timeout=self._timeout,
                raise_for_status=True,
            )
            self._sessions[loop] = session
        return session

    async def call(self, method: str, params: Sequence[Any]) -> Any:
        """Send one call; the decoded reply object (``result`` or ``error`` inside)."""
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)}
        return await self._post(body, retryable(method))

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> Any:
        """Send calls in one HTTP request; the replies matched to the calls by id, in call order.

        A reply that is not a list (nodes answer a rejected batch with one error object) is
        returned as is; a list that does not answer every id raises :class:`ChainUnavailable`.
        """
        ids = [next(self._ids) for _ in calls]
        body = [
            {"jsonrpc": "2.0", "method": method, "params": params, "id": id_}
            for id_, (method, params) in zip(ids, calls, strict=True)
        ]
        replies = await self._post(body, all(retryable(method) for method, _ in calls))
        if not isinstance(replies, list):
            return replies
        by_id = {
            reply.get("id"): reply
            for reply in replies
            if isinstance(reply, dict) and isinstance(reply.get("id"), int)
        }
        if len(replies) != len(ids) or any(id_ not in by_id for id_ in ids):
            raise ChainUnavailable(f"RPC answered {str(replies)[:200]} to a batch")
        return [by_id[id_] for id_ in ids]

    async def _post(self, body: Any, retry: bool) -> Any:
        data = json.dumps(body, separators=(",", ":"), default=_json_default).encode()
        session = self._session()
        attempts = self._attempts if retry else 1
        attempt = 0
        while True:
            try:
                async with session.post(self.url, data=data, headers=_HEADERS) as response:
                    raw = await response.read()
                break
            except (ClientError, TimeoutError):
                attempt += 1
                if attempt >= attempts:
                    raise
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ChainUnavailable(f"RPC answered a body that is not JSON: {raw[:120]!r}") from exc

    async def aclose(self) -> None:
        """Close the sessions this loop can close; forget the others (see :meth:`_session`)."""
        running = asyncio.get_running_loop()
        sessions, self._sessions = self._sessions, {}
        for loop, session in sessions.items():
            if loop is running:
                await session.close()
            elif loop.is_running():  # a loop in another thread: close it there
                asyncio.run_coroutine_threadsafe(session.close(), loop)
