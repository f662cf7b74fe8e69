"""DKIM private keys at rest: they open only with the same key and the same context."""

from __future__ import annotations

import pytest

from server.mail.sealing import SealError, open_sealed, seal

KEY = bytes(range(32))


def test_round_trip_and_fresh_nonces() -> None:
    sealed = seal(KEY, b"-----BEGIN PRIVATE KEY-----", "dom_1/sel")
    assert sealed.startswith("v1:")
    assert b"PRIVATE" not in sealed.encode()
    assert open_sealed(KEY, sealed, "dom_1/sel") == b"-----BEGIN PRIVATE KEY-----"
    assert seal(KEY, b"x", "c") != seal(KEY, b"x", "c")


@pytest.mark.parametrize(
    ("key", "text_change", "context"),
    [
        (bytes(32), None, "dom_1/sel"),  # another secret
        (KEY, None, "dom_2/sel"),  # copied onto another row
        (KEY, lambda t: t[:-4] + "AAAA", "dom_1/sel"),  # tampered
        (KEY, lambda t: "v2:" + t[3:], "dom_1/sel"),  # unknown format
        (KEY, lambda t: "v1:***", "dom_1/sel"),  # not base64
        (KEY, lambda t: "v1:", "dom_1/sel"),  # empty
    ],
)
def test_does_not_open(key: bytes, text_change: object, context: str) -> None:
    sealed = seal(KEY, b"secret", "dom_1/sel")
    if callable(text_change):
        sealed = text_change(sealed)
    with pytest.raises(SealError):
        open_sealed(key, sealed, context)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"short", b"x", "c")
