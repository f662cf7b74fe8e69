"""Auto-reply detection: RFC 3834, vendor headers, Precedence, machine senders, and
out-of-office subjects in several languages; ordinary replies stay human."""

from __future__ import annotations

import pytest

from server.mail.autoreply import detect_auto_reply

H = list[tuple[str, str]]


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ([("Auto-Submitted", "auto-replied")], "auto_replied"),
        ([("Auto-Submitted", "auto-generated; owner-email=x@y")], "auto_generated"),
        (
            [("Auto-Submitted", "auto-replied"), ("Subject", "Out of Office: back Monday")],
            "out_of_office",
        ),
        ([("Auto-Submitted", "no"), ("Subject", "Re: pricing")], None),
        ([("X-Autoreply", "yes")], "auto_replied"),
        ([("X-Autorespond", "Yes")], "auto_replied"),
        ([("X-Auto-Response-Suppress", "All"), ("Subject", "Re: pricing")], None),
        ([("Precedence", "auto_reply")], "auto_replied"),
        ([("Precedence", "bulk")], "bulk"),
        ([("List-Unsubscribe", "<mailto:u@x>")], "bulk"),
        ([("From", "MAILER-DAEMON@mx.test")], "auto_generated"),
        ([("From", "No Reply <noreply@shop.test>")], "auto_generated"),
        ([("From", "Ann <ann@acme.test>"), ("Subject", "Re: Out of office policy")], None),
        ([("Subject", "Automatic reply: Meeting")], "out_of_office"),
        ([("Subject", "Abwesenheitsnotiz: Angebot")], "out_of_office"),
        ([("Subject", "Réponse automatique : Devis")], "out_of_office"),
        ([("Subject", "Respuesta automática: Hola")], "out_of_office"),
        ([("Subject", "Automatisch antwoord: Offerte")], "out_of_office"),
        ([("Subject", "Fuori sede")], "out_of_office"),
        ([("Subject", "Autosvar: Hej")], "out_of_office"),
        ([("Subject", "自动回复: 你好")], "out_of_office"),
        ([("Subject", "Re: your proposal")], None),
        ([], None),
    ],
)
def test_detection_table(headers: H, kind: str | None) -> None:
    verdict = detect_auto_reply(headers)
    assert verdict.kind == kind
    assert verdict.automatic is (kind is not None)
    assert (verdict.reason is None) is (kind is None)


def test_explicit_subject_and_sender_win() -> None:
    assert detect_auto_reply([], subject="Out of office", sender="a@b").kind == "out_of_office"
    assert detect_auto_reply([("Subject", "Out of office")], subject="hello").kind is None
