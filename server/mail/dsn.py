"""Delivery status notifications (RFC 3464 ``multipart/report; report-type=delivery-status``),
parsed (pure): one record per recipient (Final-Recipient, Action, Status, Diagnostic-Code) and
the Message-ID of the returned message, classified by RFC 3463 status code.

Classification (:data:`BOUNCE_TABLE`): a *hard* bounce means the address cannot work (it goes
to suppression); *soft* ones are counted (mailbox full, greylisting, timeouts); *policy* means
the receiver refused us (5.7.x: authentication, reputation) - never the recipient's fault, so
never suppressed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Literal

from server.mail.inbound_parse import (
    InboundParseError,
    MessageTooLarge,
    ParseLimits,
    decode_header_value,
    parse_message_ids,
)

__all__ = [
    "BOUNCE_TABLE",
    "BounceKind",
    "DeliveryReport",
    "NotADsn",
    "RecipientStatus",
    "classify",
    "parse_dsn",
]

BounceKind = Literal["hard", "soft", "policy", "none"]

BOUNCE_TABLE: tuple[tuple[str, BounceKind], ...] = (
    # exact codes and prefixes, most specific first; see RFC 3463 §3
    ("5.1.1", "hard"),  # bad destination mailbox address
    ("5.1.2", "hard"),  # bad destination system address (no such domain)
    ("5.1.3", "hard"),  # bad destination mailbox address syntax
    ("5.1.6", "hard"),  # destination mailbox has moved
    ("5.1.10", "hard"),  # recipient address has null MX (RFC 7505)
    ("5.2.1", "hard"),  # mailbox disabled
    ("5.4.4", "hard"),  # unable to route: the domain does not resolve
    ("5.2.2", "soft"),  # mailbox full
    ("5.7.", "policy"),  # security or policy: the sender's problem
    ("4.7.", "policy"),  # throttling, greylisting on policy grounds
    ("4.", "soft"),  # any persistent transient failure
    ("5.", "soft"),  # other permanent failures (system, network, content): counted, not suppressed
    ("2.", "none"),  # delivered, relayed, expanded
)
"""Status code -> bounce kind; the first entry the code equals or starts with decides."""

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{5,32}")
_CODE_IN_TEXT = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_PARSER = BytesParser(policy=policy.compat32)  # raw header text, decoded by us


class NotADsn(InboundParseError):
    """A message that is not a delivery status notification."""

    code = "not_a_dsn"


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's block of the report, plus its classification."""

    final_recipient: str | None
    original_recipient: str | None
    action: str
    status: str | None
    diagnostic_code: str | None
    remote_mta: str | None
    kind: BounceKind


@dataclass(frozen=True)
class DeliveryReport:
    """A parsed DSN: who reported, the returned message's Message-ID, and every recipient."""

    reporting_mta: str | None
    original_envelope_id: str | None
    original_message_id: str | None
    recipients: tuple[RecipientStatus, ...]
    queue_id: str | None = None
    """The reporting Postfix's queue id of the message (``X-Postfix-Queue-ID``): when our
    relay bounced it, the id its ``250`` gave the outbox."""

    @property
    def hard_bounces(self) -> tuple[RecipientStatus, ...]:
        """The recipients whose address cannot work."""
        return tuple(r for r in self.recipients if r.kind == "hard")


def classify(action: str, status: str | None, diagnostic: str | None = None) -> BounceKind:
    """The bounce kind of one recipient: by its Status code (or one found in the diagnostic),
    else by the action (``failed`` without a code: soft, ``delayed``: soft)."""
    action = action.strip().lower()
    if action in ("delivered", "relayed", "expanded"):
        return "none"
    code = _normal_status(status)
    if code is None and diagnostic:
        found = _CODE_IN_TEXT.search(diagnostic)
        code = ".".join(found.groups()) if found else None
    if code is not None:
        if action == "delayed" and code.startswith("5."):
            code = "4." + code[2:]  # a delay is never permanent
        for prefix, kind in BOUNCE_TABLE:
            if code == prefix or (prefix.endswith(".") and code.startswith(prefix)):
                return kind
    return "soft" if action in ("failed", "delayed") else "none"


def _normal_status(status: str | None) -> str | None:
    if not status:
        return None
    token = status.strip().split(None, 1)[0] if status.strip() else ""
    match = _STATUS.match(token)
    if not match:
        return None
    return ".".join(str(int(x)) for x in match.groups())


def _typed_value(value: str | None) -> str | None:
    """``rfc822; a@b`` -> ``a@b`` (the address type dropped, decoded, trimmed)."""
    if value is None:
        return None
    text = decode_header_value(value, 2000)
    _, sep, rest = text.partition(";")
    out = (rest if sep else text).strip().strip("<>").strip()
    return out or None


def _field(block: Message, name: str, limit: int = 2000) -> str | None:
    try:
        value = block.get(name)
    except Exception:
        return None
    return decode_header_value(str(value), limit) if value is not None else None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    if isinstance(payload, str):  # some MTAs encode the report; parse its text ourselves
        text = payload.replace("\r\n", "\n")
        chunks = [c for c in re.split(r"\n\s*\n", text) if c.strip()]
        return [_PARSER.parsebytes(c.encode("utf-8", "replace") + b"\n\n") for c in chunks[:200]]
    return []


def _returned_message_id(msg: Message) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found = parse_message_ids(str(payload[0].get("Message-ID", "") or ""), 1)
                if found:
                    return found[0]
        if ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            try:
                raw = part.get_payload(decode=True)
            except Exception:
                raw = None
            if isinstance(raw, bytes):
                inner = _PARSER.parsebytes(raw + b"\n\n", headersonly=True)
                found = parse_message_ids(str(inner.get("Message-ID", "") or ""), 1)
                if found:
                    return found[0]
    return None


def parse_dsn(raw: bytes, limits: ParseLimits | None = None) -> DeliveryReport:
    """Parse a DSN; :class:`NotADsn` for any other message, :class:`InboundParseError` (or a
    subclass) for malformed input, nothing else."""
    limits = limits or ParseLimits()
    if len(raw) > limits.max_bytes:
        raise MessageTooLarge(f"message over {limits.max_bytes} bytes")
    try:
        msg = _PARSER.parsebytes(bytes(raw))
        if msg.get_content_type() != "multipart/report":
            raise NotADsn("not a multipart/report")
        report_type = str(msg.get_param("report-type", "") or "").lower()
        if report_type and report_type != "delivery-status":
            raise NotADsn(f"a {report_type[:40]} report, not delivery-status")
        status_part = next(
            (
                p
                for p in msg.walk()
                if p.get_content_type()
                in ("message/delivery-status", "message/global-delivery-status")
            ),
            None,
        )
        if status_part is None:
            raise NotADsn("no message/delivery-status part")
        blocks = _blocks(status_part)
        if not blocks:
            raise InboundParseError("an empty delivery-status part")
        if len(blocks) > limits.max_parts:
            raise InboundParseError("too many recipient blocks")
        head, per_recipient = blocks[0], blocks[1:]
        if not per_recipient:
            raise InboundParseError("a delivery-status part without a recipient")
        recipients = []
        for block in per_recipient:
            action = (_field(block, "Action", 40) or "").lower()
            status = _field(block, "Status", 40)
            diagnostic = _field(block, "Diagnostic-Code")
            diagnostic = re.sub(r"\s+", " ", diagnostic) if diagnostic else None
            recipients.append(
                RecipientStatus(
                    final_recipient=_lower(_typed_value(_field(block, "Final-Recipient"))),
                    original_recipient=_lower(_typed_value(_field(block, "Original-Recipient"))),
                    action=action,
                    status=_normal_status(status),
                    diagnostic_code=diagnostic,
                    remote_mta=_typed_value(_field(block, "Remote-MTA")),
                    kind=classify(action, status, diagnostic),
                )
            )
        return DeliveryReport(
            reporting_mta=_typed_value(_field(head, "Reporting-MTA")),
            original_envelope_id=_field(head, "Original-Envelope-Id", 200),
            original_message_id=_returned_message_id(msg),
            recipients=tuple(recipients),
            queue_id=_queue_id(_field(head, "X-Postfix-Queue-ID", 80)),
        )
    except InboundParseError:
        raise
    except RecursionError:
        raise InboundParseError("report structure too deep") from None
    except Exception as exc:
        raise InboundParseError(f"unparseable report ({type(exc).__name__})") from None


def _queue_id(value: str | None) -> str | None:
    token = value.strip() if value else ""
    return token if _QUEUE_ID.fullmatch(token) else None


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None
