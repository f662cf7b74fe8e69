"""A conservative "random-looking local part" heuristic (e.g. ``xk7qzpw9vb3``).

It only fires on strong signals so real names (``john.smith``, ``jsmith``, ``mueller``,
``szczepanski``) never trip it: letters and digits interleaved many times, long hex strings, or
long vowel-less letter runs.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]{8,}")
_RUNS = re.compile(r"[a-z]+|[0-9]+")
_LETTER_RUNS = re.compile(r"[a-z]{8,}")
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{7,}")
_HEX = re.compile(r"[0-9a-f]{16,}")
_VOWELS = frozenset("aeiouy")

MIN_ALTERNATIONS = 4  # letter/digit switches within one token
MIN_HEX_DIGITS = 4
MAX_VOWEL_RATIO = 0.15


def _token_is_gibberish(token: str) -> bool:
    """One separator-free token of at least eight letters and digits."""
    if len(_RUNS.findall(token)) > MIN_ALTERNATIONS:
        return True
    if _HEX.fullmatch(token) and sum(c.isdigit() for c in token) >= MIN_HEX_DIGITS:
        return True
    for run in _LETTER_RUNS.findall(token):
        if _CONSONANT_RUN.search(run):
            vowels = sum(c in _VOWELS for c in run)
            if vowels / len(run) < MAX_VOWEL_RATIO:
                return True
    return False


def looks_gibberish(local_part: str) -> bool:
    """True when the local part (``+tag`` ignored) looks machine-generated rather than a name."""
    text = local_part.lower().split("+", 1)[0]
    return len(text) >= 8 and any(_token_is_gibberish(t) for t in _TOKEN.findall(text))
