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
import logging
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import pydantic_core
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from x402gw.errors import ChainUnavailable

log = logging.getLogger("x402gw.chain")
_HEADERS: Final = {"Content-Type": "application/json"}
_SECRET_MIN: Final = 8  # path segments and query values this long may be keys: hidden on their own
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


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: all of it that may appear in a message or a log.

    Providers put API keys in the path (``/v3/<key>``), the query or the userinfo.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:  # an unparseable URL or port: name nothing of it
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}" + (f":{port}" if port is not None else "")


class Redactor:
    """Replaces the secret-bearing parts of one URL (the URL itself, its path, query, fragment,
    userinfo, and any path segment or query value of 8+ characters) in text with ``***``."""

    def __init__(self, url: str) -> None:
        self.endpoint = redact_url(url)
        found: set[str] = {url}
        try:
            parts = urlsplit(url)
            userinfo = parts.netloc.rpartition("@")[0]
            found.update((userinfo, parts.query, parts.fragment))
            found.update((parts.username or "", parts.password or ""))
            if parts.path not in ("", "/"):
                found.add(parts.path)
            long_bits = [*parts.path.split("/")]
            long_bits += [v for pair in parse_qsl(parts.query) for v in pair]
            found.update(bit for bit in long_bits if len(bit) >= _SECRET_MIN)
        except ValueError:
            pass
        found |= {unquote(bit) for bit in found}
        found.discard("")
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with every secret part of the URL replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonRpcTransport:
    """JSON-RPC over HTTP POST to one URL; one pooled :class:`ClientSession` per event loop.

    Transport failures raise :class:`aiohttp.ClientError`, :class:`TimeoutError` or
    :class:`OSError` (callers classify them; their text may name the URL: pass it through
    :attr:`redact`); a body that is not JSON raises :class:`ChainUnavailable`. Replies are
    returned as decoded, error objects included. Messages never carry the URL's path, query or
    userinfo, nor the node's body (logged, redacted, instead).
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
        self.redact = Redactor(url)
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
            log.warning(
                "RPC %s answered %d replies to a batch of %d: %s",
                self.redact.endpoint,
                len(replies),
                len(ids),
                self.redact(str(replies)[:4096])[:200],
            )
            raise ChainUnavailable(
                "RPC answered something other than one reply per call to a batch"
            )
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
        try:  # pydantic's parser limits nesting: a hostile node cannot crash the process
            return pydantic_core.from_json(raw)
        except ValueError:  # not JSON, too deep, or not UTF-8
            log.warning(
                "RPC %s answered a body that is not JSON: %s",
                self.redact.endpoint,
                self.redact(repr(raw[:4096]))[:120],
            )
            raise ChainUnavailable("RPC answered a body that is not JSON") from None

    async def aclose(self) -> None:
        """Close the sessions this loop can close; forget the others (see :meth:`_session`)."""
        running = asyncio.get_running_loop()
        sessions, self._sessions = self._sessions, {}
        for loop, session in sessions.items():
            if loop is running:
                await session.close()
            elif loop.is_running():  # a loop in another thread: close it there
                asyncio.run_coroutine_threadsafe(session.close(), loop)
