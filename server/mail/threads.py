"""Which conversation a message belongs to (pure): by its Message-ID references, the way
mail clients thread (RFC 5322 §3.6.4): ``In-Reply-To`` first, then ``References`` newest first,
then the message's own id (the same message seen twice)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["candidate_ids", "thread_for"]


def candidate_ids(
    message_id: str | None, in_reply_to: Sequence[str], references: Sequence[str]
) -> list[str]:
    """The Message-IDs to look up, most telling first, without repeats."""
    ordered = [*in_reply_to, *reversed(references)]
    if message_id:
        ordered.append(message_id)
    seen: dict[str, None] = {}
    for item in ordered:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def thread_for(
    message_id: str | None,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    known: Mapping[str, str],
    new_thread: Callable[[], str],
) -> tuple[str, bool]:
    """``(thread id, created)``: the thread of the first candidate id in ``known`` (Message-ID ->
    thread id), else a fresh one from ``new_thread``."""
    for candidate in candidate_ids(message_id, in_reply_to, references):
        thread = known.get(candidate)
        if thread is not None:
            return thread, False
    return new_thread(), True
