"""The Postfix log probe: a Message-ID whose queue file was committed is queued (with its queue
id); one only cleanup saw (DATA cut off) or never seen is not; no log is unknown."""

from __future__ import annotations

from pathlib import Path

from server.mail.handoff import PostfixLogProbe
from server.mail.ports import HandoffAnswer

LOG = """\
Dec  7 14:45:51 mx postfix/relay/smtpd[101]: 4AbC1: client=unknown[127.0.0.1]
Dec  7 14:45:51 mx postfix/cleanup[102]: 4AbC1: message-id=<email_01a@acme.test>
Dec  7 14:45:51 mx postfix/qmgr[103]: 4AbC1: from=<ann@acme.test>, size=900, nrcpt=1 (queue active)
Dec  7 14:45:52 mx postfix/relay/smtpd[101]: 4XyZ2: client=unknown[127.0.0.1]
Dec  7 14:45:52 mx postfix/cleanup[102]: 4XyZ2: message-id=<email_01b@acme.test>
Dec  7 14:45:52 mx postfix/relay/smtpd[101]: lost connection after DATA (512 bytes)
"""


async def test_queued_cut_off_and_unseen(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    log.write_text(LOG)
    probe = PostfixLogProbe(log, settle_seconds=0)
    assert await probe("<email_01a@acme.test>") == HandoffAnswer(True, "4AbC1")
    assert await probe("<email_01b@acme.test>") == HandoffAnswer(False)
    assert await probe("<email_01c@acme.test>") == HandoffAnswer(False)


async def test_no_log_is_unknown(tmp_path: Path) -> None:
    probe = PostfixLogProbe(tmp_path / "missing.log")
    assert await probe("<email_01a@acme.test>") == HandoffAnswer(None)


async def test_only_the_tail_is_read(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    log.write_text(LOG + "x" * 10_000 + "\n")
    probe = PostfixLogProbe(log, settle_seconds=0, tail_bytes=5_000)
    assert await probe("<email_01a@acme.test>") == HandoffAnswer(False)
