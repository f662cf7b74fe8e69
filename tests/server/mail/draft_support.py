"""A plain text message from ann@acme.test to one recipient, for the message-building tests to
vary one field at a time."""

from __future__ import annotations

from server.mail.message import Draft


def draft(**kw: object) -> Draft:
    """The plain draft with ``kw`` in place of its fields."""
    base: dict[str, object] = {
        "from_": "Ann <ann@acme.test>",
        "to": ["john.smith@company.test"],
        "subject": "Hello",
        "text": "Hi John,\nhow are you?\n",
    }
    base.update(kw)
    return Draft(**base)  # type: ignore[arg-type]
