"""Hand messages to the configured relay over SMTP (aiosmtplib), one connection reused across
messages, STARTTLS and AUTH when configured.

Each message is its own MAIL / RCPT / DATA transaction. A failure before DATA is a plain
temporary or permanent refusal; a lost connection or timeout *during* DATA is ambiguous (the
relay may have queued it): :attr:`RelayResult.ambiguous` tells the worker to apply the outbox's
recovery rule instead of retrying blindly.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from server.mail.outbox_rules import RelayOutcome, classify_reply, queue_id_of

__all__ = ["Opened", "Relay", "RelayConfig", "RelayResult"]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Where and how to reach the relay; ``starttls`` None: when the relay offers it."""

    host: str
    port: int = 25
    starttls: bool | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    cert_bundle: str | None = None
    validate_certs: bool = True
    check_hostname: bool = True  # False: verify the chain only (a relay reached by address)
    local_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The relay's answer to one message (``reply``: the relay's text, or our short reason when
    there was none; never a configured secret)."""

    outcome: RelayOutcome
    code: int | None
    reply: str
    queue_id: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    ambiguous: bool = False


class Relay:
    """One SMTP connection to the relay, opened on first use and reopened after an error."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._smtp: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self.config
        context = None
        if c.cert_bundle is not None:
            context = ssl.create_default_context(cafile=c.cert_bundle)
            context.check_hostname = c.check_hostname
        smtp = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            timeout=c.timeout,
            start_tls=c.starttls,
            validate_certs=c.validate_certs,
            tls_context=context,
            username=c.username,
            password=c.password,
            local_hostname=c.local_hostname,
        )
        await smtp.connect()
        self._smtp = smtp
        return smtp

    async def close(self) -> None:
        """QUIT and close (errors ignored: the connection is going anyway)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):
                await smtp.quit()
            smtp.close()

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> RelayResult:
        """Hand one message over (:meth:`open` then :meth:`data`)."""
        opened = await self.open(envelope_from, recipients)
        if isinstance(opened, RelayResult):
            return opened
        return await self.data(opened, raw)

    async def open(self, envelope_from: str, recipients: Sequence[str]) -> Opened | RelayResult:
        """MAIL and RCPT of one transaction (nothing can be queued before DATA, so the worker
        runs this while it commits the hand-off); the open transaction, or why it failed. A
        reused connection found closed is reopened once."""
        for attempt in (1, 2):
            fresh = self._smtp is None
            try:
                smtp = self._smtp or await self._connect()
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._drop()
                return _connect_failure(exc, self.config)
            try:
                return await self._envelope(smtp, envelope_from, recipients)
            except _Stale:
                await self._drop()
                if fresh or attempt == 2:
                    return RelayResult(RelayOutcome.TEMPORARY, None, "connection lost")
        return RelayResult(RelayOutcome.TEMPORARY, None, "connection lost")  # pragma: no cover

    async def abandon(self, opened: Opened) -> None:
        """Give up an open transaction without sending its data (RSET)."""
        if self._smtp is opened.smtp:
            await self._reset(opened.smtp)

    async def _envelope(
        self, smtp: aiosmtplib.SMTP, envelope_from: str, recipients: Sequence[str]
    ) -> Opened | RelayResult:
        try:
            await smtp.mail(envelope_from)
        except aiosmtplib.SMTPServerDisconnected:
            raise _Stale from None
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(smtp)
            return RelayResult(classify_reply(exc.code), exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            return _failure(exc)
        refused: dict[str, str] = {}
        codes: list[int] = []
        try:
            for rcpt in recipients:
                try:
                    await smtp.rcpt(rcpt)
                except aiosmtplib.SMTPResponseException as exc:
                    refused[rcpt] = f"{exc.code} {exc.message}"[:300]
                    codes.append(exc.code)
            if len(refused) == len(recipients):
                await self._reset(smtp)
                worst = max(codes) if all(c >= 500 for c in codes) else min(codes)
                return RelayResult(
                    classify_reply(worst), worst, "every recipient refused", None, refused
                )
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            return _failure(exc)
        return Opened(smtp, refused)

    async def data(self, opened: Opened, raw: bytes) -> RelayResult:
        """DATA of an open transaction: the relay's answer (ambiguous when the connection goes
        while the message is on its way)."""
        smtp, refused = opened.smtp, opened.refused
        if self._smtp is not smtp:  # dropped meanwhile: nothing was sent
            return RelayResult(RelayOutcome.TEMPORARY, None, "connection lost", None, refused)
        try:
            response = await smtp.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(smtp)
            return RelayResult(classify_reply(exc.code), exc.code, exc.message, None, refused)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            result = _failure(exc)
            return RelayResult(result.outcome, None, result.reply, None, refused, ambiguous=True)
        return RelayResult(
            classify_reply(response.code),
            response.code,
            response.message,
            queue_id_of(response.message),
            refused,
        )

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self._drop()


@dataclass(frozen=True, slots=True)
class Opened:
    """A transaction past RCPT on ``smtp``, waiting for its DATA (``refused``: recipients the
    relay turned down, the rest accepted)."""

    smtp: aiosmtplib.SMTP
    refused: dict[str, str]


class _Stale(Exception):
    """A reused connection turned out closed before the transaction began."""


def _failure(exc: BaseException) -> RelayResult:
    return RelayResult(RelayOutcome.TEMPORARY, None, f"relay unreachable: {type(exc).__name__}")


def _connect_failure(exc: BaseException, config: RelayConfig) -> RelayResult:
    """Why connecting (greeting, STARTTLS, AUTH) failed. A refused login is a configuration
    error, reported as such but temporary so the mail waits for a fix instead of being dropped;
    the relay's text is bounded and never carries the password back."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        text = _redact(exc.message, config.password)
        return RelayResult(
            RelayOutcome.TEMPORARY, exc.code, f"relay refused our credentials: {text}"[:300]
        )
    if (
        config.username is not None
        and type(exc) is aiosmtplib.SMTPException
        and "auth" in exc.message.lower()
    ):
        return RelayResult(
            RelayOutcome.TEMPORARY, None, "relay offers no AUTH we can use (credentials configured)"
        )
    return _failure(exc)


def _redact(text: str, secret: str | None) -> str:
    return (text.replace(secret, "[redacted]") if secret else text)[:300]
