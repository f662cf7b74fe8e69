"""Weighted Jaccard over tags with inverse-document-frequency weights (pure reference).

score(Q, P) = W(Q ∩ P) / W(Q ∪ P), W(S) = Σ idf(t), idf(t) = ln((N + 1) / (df(t) + 1)) + 1,
where N is the pool size and df(t) the number of prospects with tag t. Rare tags weigh more;
a query tag unknown to the pool (df 0) still counts in the union. The SQL of each backend
computes the same formula; this module is the specification the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

__all__ = ["SCORE_DIGITS", "idf", "weighted_jaccard"]

SCORE_DIGITS = 9
"""Scores are rounded to this many decimals so float summation order never breaks ties."""


def idf(df: int, n: int) -> float:
    """Smoothed inverse document frequency; always ≥ 1 for 0 ≤ df ≤ n."""
    if n < 0 or df < 0:
        raise ValueError("document counts cannot be negative")
    return math.log((n + 1) / (df + 1)) + 1.0


def weighted_jaccard(
    query: Collection[str], tags: Collection[str], weights: Mapping[str, float], n: int
) -> float:
    """The rounded score of a prospect's ``tags`` for ``query``; weights missing -> idf(0, n)."""
    unknown = idf(0, n)
    q, p = set(query), set(tags)
    union = sum(weights.get(t, unknown) for t in q | p)
    if union == 0:
        return 0.0
    inter = sum(weights.get(t, unknown) for t in q & p)
    return round(inter / union, SCORE_DIGITS)
