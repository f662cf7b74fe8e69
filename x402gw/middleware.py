"""Pure ASGI x402 payment middleware: 402 challenges, verify, one use per authorization, settle, serve.

Default flow: verify, reserve the authorization in the ledger, run the handler with its whole
response buffered, settle, then send (never paid content without settlement). ``upfront`` routes
settle before the handler. Works in front of any ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from x402gw import _flow
from x402gw._flow import Offers, Problem, Replay
from x402gw.chain import ChainClient
from x402gw.config import PaymentConfig, PricedRoute
from x402gw.errors import ChainError, NothingSent, X402Error
from x402gw.exact_evm import INSUFFICIENT_BALANCE, SETTLEMENT_PENDING, Candidate
from x402gw.facilitator import (
    FacilitatorError,
    FacilitatorUnavailable,
    LocalFacilitator,
    reconcile_ledger,
)
from x402gw.ledger import (
    AuthorizationInUse,
    InvalidTransition,
    LedgerError,
    LedgerUnavailable,
    PaymentIdentifierInUse,
    PaymentRecord,
    Response,
    State,
    request_fingerprint,
)
from x402gw.ledger.rules import CLAIMED_STATUS
from x402gw.wire import (
    AnyPaymentPayload,
    ExactEvmPayload,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("x402gw")
_BACKEND_DOWN = (ChainError, FacilitatorUnavailable, LedgerUnavailable)
_RECONCILE_EVERY: Final = 2.0  # seconds between reconcile passes that waiting clients start
_PENDING_RETRY_AFTER: Final = 5  # seconds a client is told to wait on a pending settlement


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class _Unavailable(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Capture:
    """An ASGI ``send`` that keeps the whole response in memory, up to a size cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.too_large = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if len(self.body) > self.cap:
                self.too_large = True
                raise _TooLarge
            if not message.get("more_body", False):
                self.complete = True


def _unavailable(exc: Exception) -> _Unavailable:
    """A refusal for a backend failure: a generic message (details, which may name internal
    hosts, go to the log only)."""
    log.warning("x402gw: payment backend failed: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, FacilitatorError):
        problem = Problem(502, "facilitator_error", "the payment facilitator failed; not charged")
    else:
        problem = Problem(
            503, "payment_backend_unavailable", "payments are unavailable; not charged"
        )
    return _Unavailable(problem)


class PaymentMiddleware:
    """``PaymentMiddleware(app, config)``: charge the routes in ``config``; pass everything else through."""

    def __init__(self, app: ASGIApp, config: PaymentConfig) -> None:
        self.app = app
        self.config = config
        self._started = False
        self._start_lock = asyncio.Lock()
        self._payer_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._maintenance: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Task[None] | None = None
        self._reconciled_at = -math.inf

    # --- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """Migrate the ledger, reconcile settlements and release reservations a previous process
        left open, and start the periodic maintenance task (idempotent)."""
        async with self._start_lock:
            if self._started:
                return
            await self.config.ledger.migrate()
            if self.config.reconcile_on_startup:
                await self.maintain()
            interval = self.config.maintenance_interval
            if interval is not None:
                self._maintenance = asyncio.create_task(self._maintain_every(interval))
            self._started = True

    async def aclose(self) -> None:
        """Stop the maintenance task (the ledger and facilitator belong to the caller)."""
        tasks = [t for t in (self._maintenance, self._reconciling) if t is not None]
        self._maintenance = self._reconciling = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._started = False

    async def maintain(self) -> None:
        """One maintenance pass: reconcile ``settling`` records from the chain, and release
        ``verified`` reservations older than any handler can run (a crashed process's)."""
        ledger = self.config.ledger
        client = self._chain()
        if client is not None:
            summary = await reconcile_ledger(ledger, client)
            self._reconciled_at = time.monotonic()
            if summary.settled or summary.failed or summary.errors:
                log.info("x402gw reconcile: %s", summary)
        released = await ledger.release_stale(self.config.stale_after_seconds())
        if released:
            log.warning("x402gw: released %d stale reservations", len(released))

    async def _maintain_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.maintain()
            except Exception as exc:  # a down chain or database: try again next round
                log.warning("x402gw maintenance failed: %s", type(exc).__name__)

    def _chain(self) -> ChainClient | None:
        """Where reconcile reads the chain: the local facilitator's client, else the one given."""
        facilitator = self.config.facilitator
        if isinstance(facilitator, LocalFacilitator):
            return facilitator.client
        return self.config.reconcile_client

    async def _reconcile_soon(self) -> None:
        """Reconcile now for a waiting client, at most every few seconds, one pass at a time."""
        client = self._chain()
        if client is None:
            return
        running = self._reconciling
        if running is None or running.done():
            if time.monotonic() - self._reconciled_at < _RECONCILE_EVERY:
                return
            running = self._reconciling = asyncio.create_task(self._reconcile_once(client))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request was cancelled, not only the shared pass (shutdown)
        except Exception:
            return  # logged by the pass itself

    async def _reconcile_once(self, client: ChainClient) -> None:
        self._reconciled_at = time.monotonic()
        try:
            await reconcile_ledger(self.config.ledger, client)
        except Exception as exc:
            log.warning("x402gw reconcile failed: %s", type(exc).__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.config.unmatched == "deny":
                await _refuse_websocket(receive, send)  # nothing unpriced reaches a priced app
                return
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        path = _flow.route_path(scope)
        if method == "HEAD":
            # HEAD would run the GET handler and send no body: it only learns the price.
            priced = self.config.route_for("HEAD", path) or self.config.route_for("GET", path)
            if priced is not None:
                offers = _flow.offers_for(priced, _flow.resource_url(scope))
                problem = Problem(402, _flow.PAYMENT_REQUIRED_ERROR, "", True)
                await _send(send, *self._challenge(offers, problem, scope))
                return
        route = None if method in ("OPTIONS", "HEAD") else self.config.route_for(method, path)
        if route is None:
            if self.config.unmatched == "deny":
                await self._deny(method, path, scope, send)
            else:
                await self.app(scope, receive, send)
            return
        try:
            await self._paid(route, scope, receive, send)
        except _Unavailable as exc:
            await _send(send, *self._error(exc.problem, scope))

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await self.startup()
            elif message.get("type") == "lifespan.shutdown":
                await self.aclose()
            return message

        return wrapped

    def _error(
        self, problem: Problem, scope: Scope, headers: list[tuple[bytes, bytes]] | None = None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return _flow.error_response(
            problem, scope=scope, render=self.config.render_error, headers=headers or []
        )

    async def _deny(self, method: str, path: str, scope: Scope, send: Send) -> None:
        """Fail closed: nothing reaches the priced application without matching a priced route."""
        allowed = sorted(
            {r.method for r in self.config.routes if r.matches_path(path) and r.method != "*"}
        )
        if allowed:
            problem = Problem(405, "method_not_allowed", f"{method} is not allowed here")
            headers = [(b"allow", ", ".join(allowed).encode())]
            await _send(send, *self._error(problem, scope, headers))
            return
        await _send(send, *self._error(Problem(404, "route_not_found", "no such route"), scope))

    # --- the paid request --------------------------------------------------------------------

    async def _paid(self, route: PricedRoute, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        if not self._started:
            try:
                await self.startup()
            except (*_BACKEND_DOWN, LedgerError) as exc:
                raise _unavailable(exc) from exc
        if await self._limited(_flow.client_key(scope), scope, send):
            return
        offers = _flow.offers_for(route, _flow.resource_url(scope))
        challenge = self._challenger(offers, scope, send)
        payment = _flow.read_payment(scope.get("headers") or [], config.max_header_bytes)
        if payment is None:
            await challenge(Problem(402, _flow.PAYMENT_REQUIRED_ERROR, "", True))
            return
        if isinstance(payment, Problem):
            await challenge(payment)
            return
        requirements = _flow.match_offer(payment, offers)
        if isinstance(requirements, Problem):
            await challenge(requirements)
            return
        pid = _flow.payment_identifier(payment)
        if isinstance(pid, Problem):
            await _send(send, *self._error(pid, scope))
            return
        # Offline checks first: a forged signature costs neither a body read nor an RPC call.
        candidate = _flow.offline_check(
            payment, requirements, now=int(time.time()), networks=config.networks
        )
        if isinstance(candidate, Problem):
            await challenge(candidate)
            return
        proven = _flow.signer_proven(candidate)  # else `from` is only a claim until verify
        payer_key = "payer:" + candidate.payer.lower()
        if proven and await self._limited(payer_key, scope, send):
            return
        too_large = _flow.declared_length_problem(
            scope.get("headers") or [], config.max_request_body_bytes
        )
        if too_large is not None:
            await _send(send, *self._error(too_large, scope))
            return
        try:
            body = await _read_body(receive, config.max_request_body_bytes)
        except _ClientGone:
            return  # nothing was reserved or run
        if body is None:
            problem = Problem(413, "request_body_too_large", "the body exceeds the size limit")
            await _send(send, *self._error(problem, scope))
            return
        query = scope.get("query_string") or b""
        target = scope.get("path", "/") + ("?" + query.decode("latin-1") if query else "")
        repeat = _Repeat(
            route,
            offers,
            requirements,
            request_fingerprint(scope["method"], target, body),
            candidate.payer,
            payment.x402_version,
            scope,
            send,
            body,
            receive,
            hashlib.sha256(candidate.signature).hexdigest(),
        )
        if pid is not None and proven and await self._repeat_by_identifier(pid, repeat):
            return
        # New work must be paid with an authorization that outlives it and its settlement
        # (`now` again: the body may have been slow to arrive).
        valid_for = config.settle_window_seconds + (0 if route.upfront else route.handler_timeout)
        refusal = _flow.window_problem(candidate, now=int(time.time()), valid_for=valid_for)
        verify_started = time.time()
        if refusal is None:
            try:
                verified = await config.facilitator.verify(payment, requirements)
            except (*_BACKEND_DOWN, FacilitatorError) as exc:
                raise _unavailable(exc) from exc
            if not verified.is_valid:
                # The reason only: a facilitator's message may quote a node's error text.
                refusal = Problem(402, verified.invalid_reason or "invalid_payment", "", True)
        if refusal is not None:
            # The same signed payment as an earlier request (its nonce now used, or its window
            # now short) is that request repeated: answer as it was answered. The signer must be
            # proven offline, or present the very signature stored with the record (a contract
            # wallet's signature cannot be checked once its nonce is spent).
            if not await self._repeat_after_refusal(route, candidate, proven, pid, repeat):
                await challenge(refusal)
            return
        if not proven:  # the payer is proven by verify now
            if await self._limited(payer_key, scope, send):
                return
            if pid is not None and await self._repeat_by_identifier(pid, repeat):
                return
        resource = _flow.ledger_resource(scope["method"], target)
        async with self._payer_lock(route, candidate.payer):
            record, holder = await self._reserve(route, payment, resource, pid, repeat, challenge)
            short_funds = None
            if record is not None:
                short_funds = await self._funds_problem(route, record, verify_started)
        if holder is not None:
            await self._answer_repeat(holder, repeat, by_identifier=False)
            return
        if record is None:
            return
        if short_funds is not None:
            await _quietly(config.ledger.release(record.id))
            await challenge(short_funds)
            return
        watch = _ClientWatch(body, receive)
        try:
            if route.upfront:
                await self._upfront(
                    route, record, payment, requirements, offers, scope, watch, send
                )
            else:
                await self._deferred(
                    route, record, payment, requirements, offers, scope, watch, send
                )
        finally:
            watch.close()

    async def _repeat_by_identifier(self, pid: str, repeat: _Repeat) -> bool:
        """Answer a request whose payment identifier is already taken; False if it is new."""
        try:
            earlier = await self.config.ledger.find_by_payment_identifier(pid)
        except LedgerError as exc:
            raise _unavailable(exc) from exc
        if earlier is None:
            return False
        await self._answer_repeat(earlier, repeat, by_identifier=True)
        return True

    async def _repeat_after_refusal(
        self,
        route: PricedRoute,
        candidate: Candidate,
        proven: bool,
        pid: str | None,
        repeat: _Repeat,
    ) -> bool:
        """Answer a refused payment that repeats an earlier request's; False if it does not."""
        holder = await self._holder(route, candidate)
        if holder is not None and (proven or holder.signature_hash == repeat.signature_hash):
            await self._answer_repeat(holder, repeat, by_identifier=False)
            return True
        if pid is None or proven:  # a proven signer's identifier was looked up already
            return False
        try:
            earlier = await self.config.ledger.find_by_payment_identifier(pid)
        except LedgerError as exc:
            raise _unavailable(exc) from exc
        if earlier is None or earlier.signature_hash != repeat.signature_hash:
            return False
        await self._answer_repeat(earlier, repeat, by_identifier=True)
        return True

    async def _holder(self, route: PricedRoute, candidate: Candidate) -> PaymentRecord | None:
        """The live record of this authorization, if an earlier request reserved it."""
        try:
            return await self.config.ledger.find_live_by_authorization(
                route.network,
                route.token.address,
                candidate.payer,
                "0x" + candidate.authorization.nonce.hex(),
            )
        except LedgerError as exc:
            raise _unavailable(exc) from exc

    async def _limited(self, key: str, scope: Scope, send: Send) -> bool:
        """Answer 429 (with ``Retry-After``) when ``key`` is over its rate limit."""
        limiter = self.config.rate_limiter
        if limiter is None:
            return False
        wait = await limiter.hit(key)
        if wait is None:
            return False
        seconds = max(1, math.ceil(wait))
        problem = Problem(429, "rate_limited", f"too many requests; retry in {seconds} s")
        headers = [(b"retry-after", str(seconds).encode())]
        await _send(send, *self._error(problem, scope, headers))
        return True

    def _challenger(
        self, offers: Offers, scope: Scope, send: Send
    ) -> Callable[[Problem], Awaitable[None]]:
        async def challenge(problem: Problem) -> None:
            await _send(send, *self._challenge(offers, problem, scope))

        return challenge

    def _challenge(
        self,
        offers: Offers,
        problem: Problem,
        scope: Scope,
        settle: SettleResponse | None = None,
        version: int = 2,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return _flow.challenge_response(
            offers,
            problem,
            self.config.declare_payment_identifier,
            settle=settle,
            version=version,
            scope=scope,
            render=self.config.render_error,
        )

    def _payer_lock(self, route: PricedRoute, payer: str) -> asyncio.Lock:
        key = f"{route.network}|{route.token.address.lower()}|{payer.lower()}"
        lock = self._payer_locks.get(key)
        if lock is None:
            lock = self._payer_locks[key] = asyncio.Lock()
        return lock

    async def _funds_problem(
        self, route: PricedRoute, record: PaymentRecord, verified_at: float
    ) -> Problem | None:
        """Refuse when the payer's balance does not cover every payment of theirs in flight.

        Runs after the reservation is written (insert, then count): of two processes reserving
        at once, at least one sees the other, so together they never admit more than the
        balance. A lone payment needs no read when nothing of the payer's settled since its
        verify began: then verify's simulation has just proven the balance.
        """
        ledger = self.config.ledger
        asset = route.token.address
        client = self._chain()
        # Without a chain to read, only payments in flight count (a settled one cannot be
        # weighed against a balance nobody can read).
        since = verified_at if client is not None else time.time() + 3600.0
        try:
            count, total = await ledger.outstanding(
                route.network, asset, record.payer, settled_since=since
            )
        except LedgerError as exc:
            await _quietly(ledger.release(record.id))
            raise _unavailable(exc) from exc
        if count <= 1:
            return None
        if client is None:
            return Problem(
                402,
                INSUFFICIENT_BALANCE,
                "another payment from this payer is still being settled; retry after it",
                True,
            )
        try:
            balance = await client.token_balance(asset, record.payer)
        except ChainError as exc:
            await _quietly(ledger.release(record.id))
            raise _unavailable(exc) from exc
        if balance < total:
            return Problem(
                402,
                INSUFFICIENT_BALANCE,
                "the balance does not cover this payer's payments in flight",
                True,
            )
        return None

    async def _answer_repeat(
        self, record: PaymentRecord, repeat: _Repeat, *, by_identifier: bool
    ) -> None:
        """Answer a request repeating a payment (its identifier, or its authorization): the
        stored response once settled, never before, and only to the same payer and request."""
        upfront = repeat.route.upfront
        run_bound = self.config.stale_after_seconds()  # longer than any handler runs

        def decide(record: PaymentRecord) -> Replay:
            age = datetime.now(UTC) - record.updated_at
            return _flow.replay_decision(
                record,
                repeat.fingerprint,
                repeat.payer,
                upfront=upfront,
                claim_stale=age.total_seconds() > run_bound,
            )

        decision = decide(record)
        if decision is Replay.PENDING:
            await self._reconcile_soon()
            try:
                record = await self.config.ledger.get(record.id)
            except LedgerError as exc:
                raise _unavailable(exc) from exc
            decision = decide(record)
        scope, send = repeat.scope, repeat.send
        if decision is Replay.RUN:
            try:
                claimed = await self.config.ledger.claim_response(record.id, stale_after=run_bound)
            except LedgerError as exc:
                raise _unavailable(exc) from exc
            if claimed is not None:
                receipt = _receipt(claimed, repeat)
                watch = _ClientWatch(repeat.body, repeat.receive)
                try:
                    await self._serve_settled(
                        claimed, receipt, repeat.version, scope, watch, send, repeat.route
                    )
                finally:
                    watch.close()
                return
            decision = Replay.IN_USE  # another retry took it
        if decision is Replay.STORED:
            await _send_stored(send, record, repeat)
        elif not by_identifier and decision in (Replay.CONFLICT, Replay.IN_USE):
            problem = Problem(
                402, "authorization_in_use", "this authorization is already in use", True
            )
            await _send(
                send, *self._challenge(repeat.offers, problem, scope, version=repeat.version)
            )
        elif decision is Replay.CONFLICT:
            problem = Problem(
                409,
                "payment_identifier_conflict",
                "this payment identifier was used for another request or by another payer",
            )
            await _send(send, *self._error(problem, scope))
        elif decision is Replay.IN_USE:
            problem = Problem(
                409, "payment_identifier_in_use", "the first request with this identifier runs"
            )
            await _send(send, *self._error(problem, scope))
        elif decision is Replay.PENDING:
            status, headers, body = self._challenge(
                repeat.offers,
                Problem(402, SETTLEMENT_PENDING, "the transfer is not confirmed yet", True),
                scope,
                version=repeat.version,
            )
            headers.append((b"retry-after", str(_PENDING_RETRY_AFTER).encode()))
            await _send(send, status, headers, body)
        else:
            problem = Problem(402, record.error or "settlement_failed", "", True)
            await _send(
                send, *self._challenge(repeat.offers, problem, scope, version=repeat.version)
            )

    async def _reserve(
        self,
        route: PricedRoute,
        payment: AnyPaymentPayload,
        resource: str,
        pid: str | None,
        repeat: _Repeat,
        challenge: Callable[[Problem], Awaitable[None]],
    ) -> tuple[PaymentRecord | None, PaymentRecord | None]:
        """(the new record, None), or (None, the record already holding this authorization),
        or (None, None) when the request was answered here."""
        auth = ExactEvmPayload.parse(payment.payload).authorization  # verified, so it parses
        ledger = self.config.ledger
        try:
            record = await ledger.reserve(
                scheme="exact",
                network=route.network,
                asset=route.token.address,
                payer=auth.from_,
                pay_to=route.pay_to,
                amount=route.amount,
                nonce=auth.nonce,
                valid_before=int(auth.valid_before),
                resource=resource,
                fingerprint=repeat.fingerprint,
                payment_identifier=pid,
                signature_hash=repeat.signature_hash,
            )
        except AuthorizationInUse:
            try:
                holder = await ledger.find_live_by_authorization(
                    route.network, route.token.address, auth.from_, auth.nonce
                )
            except LedgerError as exc:
                raise _unavailable(exc) from exc
            if holder is None:
                await challenge(
                    Problem(
                        402, "authorization_in_use", "this authorization is already in use", True
                    )
                )
            return None, holder
        except PaymentIdentifierInUse:
            problem = Problem(
                409, "payment_identifier_in_use", "the first request with this identifier runs"
            )
            await _send(repeat.send, *self._error(problem, repeat.scope))
            return None, None
        except LedgerError as exc:
            raise _unavailable(exc) from exc
        return record, None

    async def _settle(
        self,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        *,
        at_settling: Response | None = None,
        when_settled: Response | None = None,
    ) -> tuple[SettleResponse, bool]:
        """Settle once and bring the ledger record along.

        The record moves to ``settling`` before anything is sent (write-ahead), carrying
        ``at_settling`` (the content being paid for): whatever happens after, even a crash,
        reconcile decides the record from the chain, and a repeat of the payment finds the
        content once the record is settled. ``when_settled`` is written with the settled state
        (an upfront run's claim); the flag returned says whether that write was this call's
        (False: a reconcile pass settled the record first, and another run may hold the claim).
        A failure before anything could be sent is a 503, "not charged"; any later backend
        failure is reported as pending: the transfer may be out.
        """
        claimed = True
        ledger = self.config.ledger
        seen: list[str] = []

        async def on_broadcast(tx_hash: str) -> None:
            seen.append(tx_hash)
            try:
                await ledger.record_broadcast(record.id, tx_hash)
            except LedgerError as exc:  # moved on (reconciled) or the database is down:
                log.warning("x402gw: broadcast of %s not recorded: %s", record.id, exc)

        try:
            await ledger.mark_settling(record.id, response=at_settling)
        except LedgerError as exc:
            await _quietly(ledger.release(record.id))
            raise _unavailable(exc) from exc
        try:
            result = await self.config.facilitator.settle(
                payment, requirements, on_broadcast=on_broadcast
            )
        except NothingSent as exc:
            await _quietly(ledger.mark_failed(record.id, "settlement_not_sent"))
            raise _unavailable(exc) from exc
        except (*_BACKEND_DOWN, FacilitatorError, LedgerError) as exc:
            log.warning(
                "x402gw: settlement of %s interrupted (%s); left to reconcile",
                record.id,
                type(exc).__name__,
            )
            result = SettleResponse(
                success=False,
                error_reason=SETTLEMENT_PENDING,
                error_message="the payment backend failed during settlement",
                payer=record.payer,
                transaction=seen[0] if seen else "",
                network=requirements.network,
            )
        try:
            if result.success:
                try:
                    await ledger.mark_settled(record.id, result.transaction, response=when_settled)
                except InvalidTransition:  # a reconcile pass settled it meanwhile
                    if when_settled is not None:
                        claimed = await ledger.claim_response(record.id) is not None
            elif result.error_reason == SETTLEMENT_PENDING:
                if result.transaction and not seen:
                    await ledger.record_broadcast(record.id, result.transaction)
            else:
                await ledger.mark_failed(record.id, result.error_reason or "settlement_failed")
        except LedgerError as exc:
            log.error("x402gw: ledger update after settlement failed: %s", exc)
            claimed = False if when_settled is not None else claimed
        return result, claimed

    async def _deferred(
        self,
        route: PricedRoute,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        offers: Offers,
        scope: Scope,
        watch: _ClientWatch,
        send: Send,
    ) -> None:
        ledger = self.config.ledger
        capture = _Capture(self.config.max_response_bytes)
        deadline = asyncio.timeout(route.handler_timeout)
        try:
            async with deadline:
                await self.app(_buffered_scope(scope), watch.receive, capture.send)
        except _TooLarge:
            pass
        except TimeoutError:
            if deadline.expired():
                log.warning("x402gw: handler passed its %.0f s deadline", route.handler_timeout)
                await _quietly(ledger.release(record.id))
                problem = Problem(504, "handler_timeout", "the request took too long; not charged")
                await _send(send, *self._error(problem, scope))
                return
            await self._handler_failed(record, scope, send)
            return
        except Exception:
            await self._handler_failed(record, scope, send)
            return
        if capture.too_large or capture.status is None or not capture.complete:
            await _quietly(ledger.release(record.id))
            code = "response_too_large" if capture.too_large else "no_response"
            problem = Problem(500, code, "the response could not be delivered; not charged")
            await _send(send, *self._error(problem, scope))
            return
        if capture.status >= 400:
            await _quietly(ledger.release(record.id))
            await _send(send, capture.status, capture.headers, bytes(capture.body))
            return
        if await watch.gone():
            log.info("x402gw: client left before settlement; not charged")
            await _quietly(ledger.release(record.id))
            return
        content: Response = (capture.status, _str_headers(capture.headers), bytes(capture.body))
        result, _ = await self._settle(record, payment, requirements, at_settling=content)
        version = payment.x402_version
        if result.success:
            headers = _flow.paid_headers(capture.headers, result, version)
            await _send(send, capture.status, headers, bytes(capture.body))
            return
        await self._settle_refused(result, offers, scope, version, send)

    async def _handler_failed(self, record: PaymentRecord, scope: Scope, send: Send) -> None:
        log.exception("x402gw: handler failed; payment not settled")
        await _quietly(self.config.ledger.release(record.id))
        problem = Problem(500, "handler_error", "the request failed; not charged")
        await _send(send, *self._error(problem, scope))

    async def _settle_refused(
        self, result: SettleResponse, offers: Offers, scope: Scope, version: int, send: Send
    ) -> None:
        """The 402 of a settlement that did not succeed (with ``Retry-After`` when pending)."""
        status, headers, body = self._challenge(
            offers, _flow.settle_problem(result), scope, settle=result, version=version
        )
        if result.error_reason == SETTLEMENT_PENDING:
            headers.append((b"retry-after", str(_PENDING_RETRY_AFTER).encode()))
        await _send(send, status, headers, body)

    async def _upfront(
        self,
        route: PricedRoute,
        record: PaymentRecord,
        payment: AnyPaymentPayload,
        requirements: PaymentRequirements | PaymentRequirementsV1,
        offers: Offers,
        scope: Scope,
        watch: _ClientWatch,
        send: Send,
    ) -> None:
        if await watch.gone():
            log.info("x402gw: client left before settlement; not charged")
            await _quietly(self.config.ledger.release(record.id))
            return
        # Settled means claimed by this run, in the same write: a repeat arriving while the
        # handler runs waits instead of running it again.
        claim: Response = (CLAIMED_STATUS, [], b"")
        result, claimed = await self._settle(record, payment, requirements, when_settled=claim)
        version = payment.x402_version
        if not result.success:
            # Pending: once reconciled as settled, a retry of this payment runs the handler.
            await self._settle_refused(result, offers, scope, version, send)
            return
        if not claimed:  # a repeat of this payment runs (or ran) the handler: never twice
            problem = Problem(
                409,
                "payment_in_use",
                "this payment is being answered for a repeat of this request; repeat it",
            )
            await _send(send, *self._error(problem, scope))
            return
        await self._serve_settled(record, result, version, scope, watch, send, route)

    async def _serve_settled(
        self,
        record: PaymentRecord,
        result: SettleResponse,
        version: int,
        scope: Scope,
        watch: _ClientWatch,
        send: Send,
        route: PricedRoute,
    ) -> None:
        """Run the handler of a payment already settled (within its deadline), streaming its
        response with the receipt, and keep the response for repeats (an error, if it fails)."""
        keep = _Capture(self.config.max_response_bytes)
        started = False

        async def paid_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = _flow.paid_headers(message.get("headers", []), result, version)
            if not keep.too_large:
                with contextlib.suppress(_TooLarge):
                    await keep.send(message)
            await send(message)

        deadline = asyncio.timeout(route.handler_timeout)
        try:
            async with deadline:
                await self.app(_buffered_scope(scope), watch.receive, paid_send)
        except Exception as exc:
            late = isinstance(exc, TimeoutError) and deadline.expired()
            log.exception("x402gw: handler failed after an upfront settlement")
            problem = (
                Problem(504, "handler_timeout", "the request took too long after payment")
                if late
                else Problem(500, "handler_error", "the request failed after payment")
            )
            status, headers, body = self._error(problem, scope)
            await _quietly(
                self.config.ledger.store_response(record.id, status, _str_headers(headers), body)
            )
            if not started:
                await _send(send, status, _flow.paid_headers(headers, result, version), body)
            return
        if keep.complete and keep.status is not None:
            await _quietly(
                self.config.ledger.store_response(
                    record.id, keep.status, _str_headers(keep.headers), bytes(keep.body)
                )
            )


@dataclass(frozen=True, slots=True)
class _Repeat:
    """What answering a repeated payment needs to know about the request repeating it."""

    route: PricedRoute
    offers: Offers
    requirements: PaymentRequirements | PaymentRequirementsV1
    fingerprint: str
    payer: str
    version: int
    scope: Scope
    send: Send
    body: bytes
    receive: Receive
    signature_hash: str  # hex SHA-256 of the payment's signature bytes


class _ClientWatch:
    """The request's ``receive`` for the handler: the buffered body once, then the client's
    disconnect, which a task watches for, so the gate can tell a client that left."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive
        self._task: asyncio.Task[Message] = asyncio.create_task(self._disconnect())

    async def _disconnect(self) -> Message:
        while True:
            message = await self._receive()
            if message.get("type") == "http.disconnect":
                return message

    async def receive(self) -> Message:
        """The body first (once), then whatever ends the request (a disconnect)."""
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await asyncio.shield(self._task)

    async def gone(self) -> bool:
        """Has the client disconnected? (Lets a disconnect already received be seen first.)"""
        await asyncio.sleep(0)
        task = self._task
        return task.done() and not task.cancelled() and task.exception() is None

    def close(self) -> None:
        """Stop watching."""
        self._task.cancel()


# --------------------------------------------------------------------------------------------


async def _read_body(receive: Receive, cap: int) -> bytes | None:
    """The whole body, None past ``cap`` bytes; raises :class:`_ClientGone` on a disconnect."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            if message["type"] == "http.disconnect":
                raise _ClientGone
            break
        body += message.get("body", b"")
        if len(body) > cap:
            return None
        if not message.get("more_body", False):
            break
    return bytes(body)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _flow.with_length(headers, len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stored(send: Send, record: PaymentRecord, repeat: _Repeat) -> None:
    """The stored response; a settled record's carries a receipt rebuilt from the record."""
    stored = record.response
    assert stored is not None
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
    if record.state is State.SETTLED and stored.status < 400 and record.tx_hash is not None:
        headers = _flow.paid_headers(headers, _receipt(record, repeat), repeat.version)
    await _send(send, stored.status, headers, stored.body)


def _receipt(record: PaymentRecord, repeat: _Repeat) -> SettleResponse:
    """The receipt of a settled record, for the version and network the repeat speaks."""
    return SettleResponse(
        success=True,
        payer=repeat.payer,
        transaction=record.tx_hash or "",
        network=repeat.requirements.network,
        amount=str(record.amount),
    )


def _buffered_scope(scope: Scope) -> Scope:
    """The scope without server extensions that bypass body messages (``pathsend``,
    ``zerocopysend``): the gate must see every byte it charges for."""
    extensions = scope.get("extensions")
    if not extensions or not (
        {"http.response.pathsend", "http.response.zerocopysend"} & set(extensions)
    ):
        return scope
    kept = {
        k: v
        for k, v in extensions.items()
        if k not in ("http.response.pathsend", "http.response.zerocopysend")
    }
    return {**scope, "extensions": kept}


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    """Close a websocket handshake: a gate in deny mode lets nothing unpriced through."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def _str_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Run a best-effort ledger update; a failure is logged, never turned into a 500."""
    try:
        await awaitable
    except X402Error as exc:
        log.error("x402gw: ledger update failed: %s", exc)
