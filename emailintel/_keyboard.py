"""QWERTY-aware weighted edit distance (optimal string alignment: adjacent transpositions).

Typing slips (a neighbouring key, a doubled or dropped double letter, two swapped letters) cost
less than arbitrary edits, so "gnail" is nearer to "gmail" than "email" is.
"""

from __future__ import annotations

_ROWS = ("1234567890-", "qwertyuiop", "asdfghjkl;", "zxcvbnm,./")

SLIP = 0.5  # neighbouring key, transposition, doubled or dropped double letter
EDIT = 1.0  # a dropped or an extra character
SUBSTITUTE = 1.25  # an unrelated character in place of another
DROPPED_FIRST = 1.5  # the first character missing or extra (rare for a real slip)


def _build_neighbours() -> dict[str, frozenset[str]]:
    """Keys touching each key on a staggered QWERTY layout (each row sits half a key right)."""
    near: dict[str, set[str]] = {}
    for r, row in enumerate(_ROWS):
        for i, ch in enumerate(row):
            keys = near.setdefault(ch, set())
            keys.update(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
            if r > 0:
                above = _ROWS[r - 1]
                keys.update(above[j] for j in (i, i + 1) if 0 <= j < len(above))
            if r + 1 < len(_ROWS):
                below = _ROWS[r + 1]
                keys.update(below[j] for j in (i - 1, i) if 0 <= j < len(below))
    return {k: frozenset(v) for k, v in near.items()}


NEIGHBOURS = _build_neighbours()


def adjacent(a: str, b: str) -> bool:
    """True if keys ``a`` and ``b`` touch on a QWERTY keyboard."""
    return b in NEIGHBOURS.get(a, frozenset())


def _extra_cost(ch: str, target: str, j: int, *, penalise_first: bool) -> float:
    """Cost of typing a stray ``ch`` between ``target[j - 1]`` and ``target[j]``.

    Cheap when it repeats or touches one of the two intended keys around it (a fat finger).
    """
    for k in (j - 1, j):
        if 0 <= k < len(target) and (target[k] == ch or adjacent(target[k], ch)):
            return SLIP
    if j == 0 and penalise_first:
        return DROPPED_FIRST
    return EDIT


def _missing_cost(target: str, j: int, *, penalise_first: bool) -> float:
    """Cost of ``target[j]`` having been left out: cheap for half of a double letter."""
    ch = target[j]
    if (j > 0 and target[j - 1] == ch) or (j + 1 < len(target) and target[j + 1] == ch):
        return SLIP
    if j == 0 and penalise_first:
        return DROPPED_FIRST
    return EDIT


def typo_cost(typed: str, target: str, *, penalise_first: bool = True) -> float:
    """Weighted OSA distance from what was typed to what was meant."""
    n, m = len(typed), len(target)
    prev2: list[float] = []
    prev = [0.0] * (m + 1)
    for j in range(1, m + 1):
        prev[j] = prev[j - 1] + _missing_cost(target, j - 1, penalise_first=penalise_first)
    for i in range(1, n + 1):
        cur = [prev[0] + _extra_cost(typed[i - 1], target, 0, penalise_first=penalise_first)]
        cur += [0.0] * m
        a = typed[i - 1]
        for j in range(1, m + 1):
            b = target[j - 1]
            sub = prev[j - 1] + (0.0 if a == b else SLIP if adjacent(a, b) else SUBSTITUTE)
            best = min(
                sub,
                prev[j] + _extra_cost(a, target, j, penalise_first=penalise_first),
                cur[j - 1] + _missing_cost(target, j - 1, penalise_first=penalise_first),
            )
            if i > 1 and j > 1 and a == target[j - 2] and typed[i - 2] == b:
                best = min(best, prev2[j - 2] + SLIP)
            cur[j] = best
        prev2, prev = prev, cur
    return prev[m]
