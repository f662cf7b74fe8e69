"""Hand-encoded ABI words for the fixed layouts on the payment hot path.

Byte-identical to ``eth_abi.encode`` for the types below (the tests check that over random
values) at a fraction of its CPU; values it would refuse are refused here too (ValueError,
OverflowError or TypeError instead of eth_abi's EncodingError classes).
"""

from __future__ import annotations

import functools
from typing import Final

from eth_utils.address import is_address, to_canonical_address

_ZERO: Final = bytes(32)


@functools.lru_cache(maxsize=4096)
def address_word(address: str | bytes) -> bytes:
    """An ``address`` word: the 20 raw bytes left-padded to 32 (checksums checked as eth_abi does)."""
    if not is_address(address):
        raise ValueError(f"not an address: {address!r}")
    return bytes(12) + to_canonical_address(address)


def uint_word(value: int, bits: int = 256) -> bytes:
    """A ``uint<bits>`` word, big-endian; out-of-range values raise OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"uint{bits} must be an int, got {value!r}")
    if value >> bits:
        raise OverflowError(f"{value} does not fit in uint{bits}")
    return value.to_bytes(32, "big")  # raises OverflowError for negatives


def bytes32_word(value: bytes) -> bytes:
    """A ``bytes32`` word: at most 32 bytes, right-padded with zeros."""
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"bytes32 must be bytes, got {type(value).__name__}")
    if len(value) > 32:
        raise ValueError(f"{len(value)} bytes exceed bytes32")
    return bytes(value) + _ZERO[len(value) :]


def bytes_tail(value: bytes) -> bytes:
    """The tail of a dynamic ``bytes`` value: its length word, then the data padded to 32."""
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"bytes must be bytes, got {type(value).__name__}")
    return len(value).to_bytes(32, "big") + bytes(value) + _ZERO[: -len(value) % 32]
