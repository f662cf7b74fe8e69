"""A deterministic mix of realistic addresses for the validate benchmarks."""

from __future__ import annotations

import random

FIRST = [
    "john",
    "jane",
    "maria",
    "li",
    "ahmed",
    "sofia",
    "lukas",
    "emma",
    "noah",
    "olga",
    "pierre",
    "yuki",
    "carlos",
    "anna",
    "david",
    "fatima",
    "jürgen",
    "søren",
    "zoë",
    "raj",
]
LAST = [
    "smith",
    "doe",
    "garcia",
    "wang",
    "khan",
    "rossi",
    "müller",
    "dubois",
    "tanaka",
    "silva",
    "novak",
    "kowalski",
    "obrien",
    "nguyen",
    "patel",
    "jensen",
    "berg",
    "costa",
    "ivanova",
    "lee",
]
COMPANY_TLDS = ["com", "io", "de", "co.uk", "fr", "net", "org", "ai", "com.br", "nl"]
FREE = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "gmx.de", "aol.com"]
TYPO = [
    "gmial.com",
    "gmai.com",
    "gnail.com",
    "hotmial.com",
    "hotmail.con",
    "yahooo.com",
    "outlok.com",
    "gmail.cmo",
    "icloud.co",
    "yaho.com",
]
ROLE = ["info", "sales", "admin", "support", "contact", "billing", "noreply", "hr", "jobs", "team"]
INVALID = [
    "plainaddress",
    "@missing-local.com",
    "two@@at.com",
    "dot.@end.com",
    ".dot@start.com",
    "spaces in@local.com",
    "trailing@dot.com.",
    "a@b",
    "a@-bad-.com",
    "x" * 70 + "@long.com",
    "bad\r\nrcpt@inject.com",
    "<angle@brackets.com>",
    "semi;colon@x.com",
    "a@b..com",
]
DISPOSABLE = [
    "mailinator.com",
    "10minutemail.com",
    "guerrillamail.com",
    "yopmail.com",
    "trashmail.com",
    "tempmail.net",
    "sharklasers.com",
    "dispostable.com",
]


def generate(n: int, seed: int = 1) -> list[str]:
    """n addresses: ~55% valid corporate, 15% free, 8% role, 8% typo, 7% invalid, 7% disposable."""
    rng = random.Random(seed)
    companies = [f"company{i}.{rng.choice(COMPANY_TLDS)}" for i in range(2000)]
    out: list[str] = []
    for _ in range(n):
        roll = rng.random()
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if roll < 0.55:
            sep = rng.choice([".", "", "_", "-"])
            local = rng.choice(
                [f"{first}{sep}{last}", f"{first[0]}{last}", first, f"{first}{last[0]}"]
            )
            out.append(f"{local}@{rng.choice(companies)}")
        elif roll < 0.70:
            out.append(f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(FREE)}")
        elif roll < 0.78:
            out.append(f"{rng.choice(ROLE)}@{rng.choice(companies)}")
        elif roll < 0.86:
            out.append(f"{first}.{last}@{rng.choice(TYPO)}")
        elif roll < 0.93:
            out.append(rng.choice(INVALID))
        else:
            out.append(f"{first}{rng.randint(1, 99)}@{rng.choice(DISPOSABLE)}")
    return out
