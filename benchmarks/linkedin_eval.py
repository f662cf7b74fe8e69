"""LinkedIn finder evaluation: precision, recall and top-1 accuracy against the search lab.

Run: ``.venv/bin/python -m benchmarks.linkedin_eval [--backend NAME ...] [--regenerate]``.
Every case of benchmarks/data/linkedin_eval.json goes through ``find_linkedin`` with each
backend pointed at the loopback search lab (tests/lab/searchlab.py), which serves the same
corpus in DuckDuckGo HTML, SearXNG JSON and Brave JSON. The match threshold is chosen on the
``train`` split only (best top-1 accuracy) and then reported on ``test``; the library's fixed
default threshold (set before the first evaluation run) is reported as well.

Counting: a case with an expected profile is a true positive when ``best`` is that profile, a
false positive when ``best`` is another URL, a false negative when it is wrong or missing; a
case without a profile is a false positive when anything is returned. Precision = TP/(TP+FP),
recall = TP/(cases with a profile), top-1 accuracy = cases answered exactly right / all cases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "linkedin_eval.json"
sys.path.insert(0, str(ROOT / "tests"))

from lab.searchlab import SearchLab  # noqa: E402

from emailintel.search import (  # noqa: E402
    engine_from_env,
    find_linkedin,
    is_profile_url,
    normalize_profile_url,
)
from emailintel.search.engines import Backoff  # noqa: E402
from emailintel.search.finder import MATCH_THRESHOLD  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    """One case's answer: the top candidate (whatever its score) and the expected URL."""

    case: dict[str, Any]
    top_url: str | None
    top_score: float

    def predicted(self, threshold: float) -> str | None:
        return self.top_url if self.top_url is not None and self.top_score >= threshold else None


@dataclass(frozen=True)
class Figures:
    precision: float
    recall: float
    top1: float
    tp: int
    fp: int
    fn: int
    n: int


def figures(outcomes: Sequence[Outcome], threshold: float) -> Figures:
    """Precision, recall and top-1 accuracy of the outcomes at a threshold."""
    tp = fp = fn = right = 0
    for o in outcomes:
        expected = o.case["expected"]
        got = o.predicted(threshold)
        if got == expected:
            right += 1
        if expected is not None and got == expected:
            tp += 1
        if got is not None and got != expected:
            fp += 1
        if expected is not None and got != expected:
            fn += 1
    positives = sum(1 for o in outcomes if o.case["expected"] is not None)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / positives if positives else 1.0
    return Figures(precision, recall, right / len(outcomes), tp, fp, fn, len(outcomes))


def choose_threshold(outcomes: Sequence[Outcome]) -> float:
    """On these (training) outcomes: the threshold with the best top-1 accuracy (higher on ties)."""
    best = (MATCH_THRESHOLD, -1.0)
    for step in range(30, 96):
        t = step / 100
        top1 = figures(outcomes, t).top1
        if top1 >= best[1]:
            best = (t, top1)
    return best[0]


async def run_backend(
    lab: SearchLab, backend: str, cases: Sequence[dict[str, Any]]
) -> tuple[list[Outcome], list[Outcome]]:
    """Every case through find_linkedin with the backend aimed at the lab, plus a naive baseline.

    The baseline takes the first profile URL the strict query returns (what a finder without
    scoring does); its answers come from the engine's cache, so it costs no extra request.
    """
    out: list[Outcome] = []
    naive: list[Outcome] = []
    engine = engine_from_env(lab.env(backend), backoff=Backoff(retries=1, base=0.0))
    async with engine:
        for case in cases:
            result = await find_linkedin(
                case["name"],
                case["company"],
                title=case.get("title"),
                location=case.get("location"),
                engine=engine,
                threshold=0.0,
            )
            top = result.candidates[0] if result.candidates else None
            out.append(Outcome(case, top.url if top else None, top.score if top else 0.0))
            first = await engine.search(result.queries[0])
            profiles = [normalize_profile_url(h.url) for h in first if is_profile_url(h.url)]
            naive.append(Outcome(case, profiles[0] if profiles else None, 1.0))
    return out, naive


def _row(label: str, f: Figures) -> str:
    return (
        f"  {label:<22} precision {f.precision:.3f}  recall {f.recall:.3f}  top-1 {f.top1:.3f}"
        f"  (TP {f.tp} FP {f.fp} FN {f.fn}, n={f.n})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["duckduckgo", "searxng", "brave"])
    parser.add_argument("--regenerate", action="store_true", help="rewrite the data file first")
    parser.add_argument(
        "--errors", action="store_true", help="list wrong answers of the train split (tuning aid)"
    )
    args = parser.parse_args(argv)
    if args.regenerate:
        from benchmarks._linkedin_corpus import build

        DATA.write_text(json.dumps(build(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    data = json.loads(DATA.read_text(encoding="utf-8"))
    cases = data["cases"]
    train = [c for c in cases if c["split"] == "train"]
    print(
        f"{len(cases)} cases ({sum(1 for c in cases if c['expected'])} with a profile), "
        f"{len(data['profiles'])} profiles and {len(data['pages'])} other pages indexed"
    )
    with SearchLab() as lab:
        for backend in args.backend or ["duckduckgo", "searxng", "brave"]:
            outcomes, naive = asyncio.run(run_backend(lab, backend, cases))
            threshold = choose_threshold([o for o in outcomes if o.case["split"] == "train"])
            print(f"{backend}: threshold {threshold:.2f} (chosen on train, {len(train)} cases)")
            for label, subset in (
                ("train", [o for o in outcomes if o.case["split"] == "train"]),
                ("test (held out)", [o for o in outcomes if o.case["split"] == "test"]),
                ("all", outcomes),
                (f"all @ default {MATCH_THRESHOLD:.2f}", outcomes),
            ):
                t = MATCH_THRESHOLD if "default" in label else threshold
                print(_row(label, figures(subset, t)))
            print(_row("naive first profile", figures(naive, 0.0)))
            if args.errors:
                for o in outcomes:
                    if o.case["split"] != "train":
                        continue
                    got = o.predicted(MATCH_THRESHOLD)
                    if got != o.case["expected"]:
                        print(
                            f"    {o.case['id']} {o.case['split']:<5} {o.case['tags']} "
                            f"{o.case['name']!r} @ {o.case['company']!r}: expected "
                            f"{o.case['expected']} got {o.top_url} ({o.top_score:.3f})"
                        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
