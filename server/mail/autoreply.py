"""Is a received message an automatic reply (pure)? RFC 3834 ``Auto-Submitted``, the vendor
headers (``X-Autoreply``, ``X-Autorespond``, ``X-Auto-Response``), ``Precedence``, machine
senders, and out-of-office subjects in several languages. Campaigns use it to tell a person's
reply from a responder's (an out-of-office pauses a sequence; a reply stops it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["AutoReply", "AutoReplyKind", "detect_auto_reply"]

AutoReplyKind = Literal["out_of_office", "auto_replied", "auto_generated", "bulk"]


@dataclass(frozen=True)
class AutoReply:
    """The verdict: ``kind`` (None: looks human) and which signal decided it."""

    kind: AutoReplyKind | None
    reason: str | None

    @property
    def automatic(self) -> bool:
        """Whether a machine sent it."""
        return self.kind is not None


_HUMAN = AutoReply(None, None)

# Subjects responders put first (lower-cased; a reply prefix such as "Re:" means a person).
OUT_OF_OFFICE_SUBJECTS: tuple[str, ...] = (
    "out of office",
    "out of the office",
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "auto:",
    "away from the office",
    "on vacation",
    "on holiday",
    "absence",
    "réponse automatique",
    "reponse automatique",
    "absent du bureau",
    "abwesenheitsnotiz",
    "automatische antwort",
    "abwesend",
    "automatisch antwoord",
    "afwezig",
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "fuori sede",
    "risposta automatica",
    "fuori ufficio",
    "resposta automática",
    "resposta automatica",
    "ausente",
    "autosvar",
    "frånvaro",
    "fraværende",
    "poissa",
    "automaattinen vastaus",
    "automatyczna odpowiedź",
    "nieobecność",
    "automatická odpověď",
    "自动回复",
    "自動返信",
    "不在",
    "автоответ",
    "автоматический ответ",
)
_MACHINE_FROM = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+@]|$)", re.IGNORECASE
)
_VENDOR = re.compile(
    r"^x-(auto[-_]?(reply|response|respond|submitted|replied|generated)|autorespond|"
    r"autoreply|holidayreply|machinegenerated)(-from|-type)?$",
    re.IGNORECASE,
)


def _first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers if k.lower() == wanted), None)


def _ooo_subject(subject: str) -> str | None:
    bare = subject.strip().lower()  # "Re: Out of office policy" is a person replying
    for phrase in OUT_OF_OFFICE_SUBJECTS:
        if bare.startswith(phrase):
            return phrase
    return None


def detect_auto_reply(
    headers: Sequence[tuple[str, str]], subject: str | None = None, sender: str | None = None
) -> AutoReply:
    """The verdict for a message's decoded header fields (``subject``/``sender`` default to
    its Subject and From). ``Auto-Submitted: no`` and ``X-Auto-Response-Suppress`` (which
    Outlook puts on ordinary mail) do not count."""
    subject = subject if subject is not None else (_first(headers, "Subject") or "")
    sender = sender if sender is not None else (_first(headers, "From") or "")
    ooo = _ooo_subject(subject)
    submitted = (_first(headers, "Auto-Submitted") or "").strip().lower()
    token = submitted.split(";", 1)[0].strip()
    if token and token != "no":
        kind: AutoReplyKind = "auto_replied" if token == "auto-replied" else "auto_generated"
        if ooo:
            kind = "out_of_office"
        return AutoReply(kind, f"Auto-Submitted: {token}"[:80])
    for name, value in headers:
        if _VENDOR.match(name) and value.strip().lower() not in ("no", "false", "0"):
            return AutoReply("out_of_office" if ooo else "auto_replied", name[:80])
    if ooo:
        return AutoReply("out_of_office", f"subject: {ooo}")
    precedence = (_first(headers, "Precedence") or "").strip().lower()
    if precedence in ("auto_reply", "auto-reply"):
        return AutoReply("auto_replied", f"Precedence: {precedence}")
    if precedence in ("bulk", "junk", "list"):
        return AutoReply("bulk", f"Precedence: {precedence}")
    address = sender.rsplit("<", 1)[-1].strip(" >").lower()
    if _MACHINE_FROM.match(address):
        return AutoReply("auto_generated", "machine sender")
    if _first(headers, "List-Id") or _first(headers, "List-Unsubscribe"):
        return AutoReply("bulk", "mailing list")
    return _HUMAN
