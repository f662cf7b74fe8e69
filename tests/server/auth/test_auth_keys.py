"""API key format, checksum and hashing."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from server.auth import keys


def test_generated_keys_have_the_documented_format_and_check_out() -> None:
    seen = set()
    for _ in range(200):
        key = keys.generate_key()
        assert re.fullmatch(r"bav_live_[0-9A-Za-z]{38}", key)
        assert keys.looks_valid(key)
        seen.add(key)
    assert len(seen) == 200


@given(st.integers(min_value=len(keys.KEY_PREFIX), max_value=keys.KEY_LENGTH - 1), st.data())
def test_any_single_character_change_is_refused(position: int, data: st.DataObject) -> None:
    key = keys.generate_key()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != key[position]]))
    altered = key[:position] + replacement + key[position + 1 :]
    assert not keys.looks_valid(altered)


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_valid(text: str) -> None:
    assert not keys.looks_valid(text)


def test_wrong_prefix_and_lengths_are_refused() -> None:
    key = keys.generate_key()
    assert not keys.looks_valid("bav_test_" + key[9:])
    assert not keys.looks_valid(key + "a")
    assert not keys.looks_valid(key[:-1])
    assert not keys.looks_valid("")


def test_hash_depends_on_the_secret_and_prefix_hides_the_key() -> None:
    key = keys.generate_key()
    one, two = keys.key_hash(key, b"a" * 32), keys.key_hash(key, b"b" * 32)
    assert one != two
    assert len(one) == 64
    assert key not in one
    shown = keys.display_prefix(key)
    assert shown.startswith("bav_live_")
    assert shown.endswith(key[-4:])
    assert len(shown.replace("…", "")) < 20
