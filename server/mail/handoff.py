"""Did the relay queue a message? For a Postfix relay on this host: read its mail log.

Postfix's cleanup logs ``QID: message-id=<...>`` while it receives a message and its queue
manager logs ``QID: from=<...>`` once the queue file is committed (after the ``250``, never for a
message whose DATA was cut off). A message whose id appears only in a cleanup line was not
queued. Used by outbox recovery for the ambiguity window (:mod:`server.mail.outbox_rules`).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from server.mail.ports import HandoffAnswer

__all__ = ["PostfixLogProbe"]

_CLEANUP = re.compile(rb"postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(<[^>\s]*>)")
_QMGR = re.compile(rb"postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<")


class PostfixLogProbe:
    """Looks a Message-ID up in the last ``tail_bytes`` of a Postfix ``maillog_file``."""

    def __init__(self, path: Path, *, settle_seconds: float = 5.0, tail_bytes: int = 64 << 20):
        self.path = path
        self.settle_seconds = settle_seconds
        self.tail_bytes = tail_bytes

    def _scan(self, message_id: str) -> tuple[bool, str | None]:
        """(seen by cleanup, the queue id it was committed under)."""
        try:
            with self.path.open("rb") as log:
                log.seek(0, 2)
                size = log.tell()
                log.seek(max(0, size - self.tail_bytes))
                text = log.read()
        except OSError:
            return False, None
        wanted = message_id.encode("ascii", "replace")
        ids = {m.group(1) for m in _CLEANUP.finditer(text) if m.group(2) == wanted}
        queued = next((m.group(1) for m in _QMGR.finditer(text) if m.group(1) in ids), None)
        return bool(ids), queued.decode("ascii") if queued is not None else None

    async def __call__(self, message_id: str) -> HandoffAnswer:
        """Queued (with its queue id), not queued (or never seen), or unknown (no log)."""
        if not self.path.exists():
            return HandoffAnswer(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_seconds
        while True:
            seen, queued = await asyncio.to_thread(self._scan, message_id)
            if queued is not None:
                return HandoffAnswer(True, queued)
            if not seen or loop.time() >= deadline:
                return HandoffAnswer(False)
            await asyncio.sleep(0.2)  # the queue manager logs a moment after cleanup
