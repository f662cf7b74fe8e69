"""Generator of the synthetic LinkedIn evaluation corpus (benchmarks/data/linkedin_eval.json).

Every person, company and URL is invented. The generator is seeded, so the committed JSON can be
rebuilt byte for byte with ``python -m benchmarks.linkedin_eval --regenerate``. It produces the
profile pages a search engine would show (titles, snippets, URL variants), non-profile LinkedIn
pages, and labelled cases: people with a profile, people without one, and the decoys that make
the task hard (same name elsewhere, similar name at the same company, namesakes at the same
company, people who moved on).
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from anyascii import anyascii

SEED = 20261129


def _w(words: str) -> list[str]:
    """The space-separated words of a string."""
    return words.split()


COMPANIES: list[tuple[str, str]] = [
    # (how a user types it, how the profile shows it)
    ("Acme Robotics, Inc.", "Acme Robotics"),
    ("Acme Analytics LLC", "Acme Analytics"),
    ("Northwind Logistics GmbH", "Northwind Logistics GmbH"),
    ("Northwind Traders Ltd", "Northwind Traders"),
    ("Brightwave Solar AG", "Brightwave Solar"),
    ("Brightway Consulting", "Brightway Consulting Group"),
    ("Helios Biotech SA", "Helios Biotech"),
    ("Kestrel Data Systems", "Kestrel Data Systems Inc."),
    ("Lumen & Lark Design Studio", "Lumen and Lark Design Studio"),
    ("Müller Bau AG", "Müller Bau"),
    ("Vindur Energi AS", "Vindur Energi"),
    ("Osaka Precision K.K.", "Osaka Precision"),
    ("Tidewater Health Partners", "Tidewater Health Partners"),
    ("Quantia Capital LLP", "Quantia Capital"),
    ("Redpine Software", "Redpine Software"),
    ("Banco Alvorada S.A.", "Banco Alvorada"),
    ("Zhongshan Smart Devices Co., Ltd.", "Zhongshan Smart Devices"),
    ("Nordlicht Versicherung AG", "Nordlicht Versicherung"),
    ("Café Lumière SARL", "Cafe Lumiere"),
    ("Polaris Mining Corp.", "Polaris Mining Corporation"),
    ("Greenleaf Foods plc", "Greenleaf Foods"),
    ("Ironbridge Engineering Ltd", "Ironbridge Engineering"),
    ("Bluefin Marine Pty Ltd", "Bluefin Marine"),
    ("Saffron Labs", "Saffron Labs"),
    ("Orbital Dynamics B.V.", "Orbital Dynamics"),
    ("Cobalt Security Oy", "Cobalt Security"),
    ("Verdant Agritech Pvt Ltd", "Verdant Agritech"),
    ("Pinecrest University", "Pinecrest University"),
    ("Medina Law Group", "Medina Law Group"),
    ("Harbor & Finch LLP", "Harbor & Finch"),
    ("Stratus Cloud Services", "Stratus Cloud Services"),
    ("Atlas Freight Co.", "Atlas Freight"),
    ("Atlas Fitness Clubs", "Atlas Fitness Clubs"),
    ("Silverline Telecom", "SilverLine Telecom"),
]

HEADLINES = [
    "Software Engineer",
    "Senior Product Manager",
    "VP of Sales",
    "Head of Marketing",
    "Data Scientist",
    "Account Executive",
    "Chief Financial Officer",
    "HR Business Partner",
    "Technical Recruiter",
    "Mechanical Engineer",
    "Operations Manager",
    "Founder & CEO",
    "UX Designer",
    "Customer Success Manager",
    "Partner",
    "Research Scientist",
    "Procurement Lead",
    "Solutions Architect",
    "Marketing Coordinator",
    "Legal Counsel",
    "Supply Chain Analyst",
    "Engineering Manager",
    "Sales Development Representative",
]

LOCATIONS = [
    "London, England, United Kingdom",
    "Berlin, Germany",
    "Munich, Bavaria, Germany",
    "Paris, Île-de-France, France",
    "Amsterdam, North Holland, Netherlands",
    "Madrid, Spain",
    "São Paulo, Brazil",
    "New York, New York, United States",
    "San Francisco Bay Area",
    "Austin, Texas, United States",
    "Toronto, Ontario, Canada",
    "Oslo, Norway",
    "Stockholm, Sweden",
    "Warsaw, Poland",
    "Istanbul, Türkiye",
    "Bengaluru, Karnataka, India",
    "Lagos, Nigeria",
    "Tokyo, Japan",
    "Sydney, New South Wales, Australia",
    "Hanoi, Vietnam",
    "Dubai, United Arab Emirates",
    "Dublin, Ireland",
    "Mexico City, Mexico",
    "Helsinki, Finland",
]

SCHOOLS = [
    "Pinecrest University",
    "Northbridge Institute of Technology",
    "Université de Valmont",
    "Technische Hochschule Lindenau",
    "Riverside State University",
    "Kingsford College",
]

POOLS: dict[str, tuple[list[str], list[str]]] = {
    "en": (
        _w(
            "James Robert William Elizabeth Katherine Michael Jennifer Thomas Margaret Richard "
            "Patricia Daniel Sarah Christopher Jessica Matthew Emily Andrew Rebecca Joseph"
        ),
        _w(
            "Smith Johnson Brown Taylor Walker Harris Clarke Lewis Robinson Wright Thompson Hughes "
            "Edwards Bennett Carter Mitchell Turner Cooper Parker Reed"
        ),
    ),
    "de": (
        _w("Jörg Jürgen Björn Käthe Günter Lukas Anna-Lena Hans-Peter Sören Ulrike"),
        _w("Müller Schröder Groß Schmidt-Weber Köhler Weiß Bäcker Hoffmann Krüger Jäger"),
    ),
    "fr": (
        _w("François Hélène Jérôme Amélie Élodie Benoît Marie-Claire Jean-Luc Cécile Stéphane"),
        _w("Dubois Lefèvre Moreau Girard Rousseau Fontaine Chevalier Lemaître Faure Mercier"),
    ),
    "es": (
        _w("José María Sofía Andrés Joaquín João Inês Gonçalo Raúl Lucía"),
        [
            "García López",
            "Martínez",
            "Fernández",
            "Núñez",
            "Gonçalves",
            "Peña",
            "Ibáñez",
            "Rodríguez",
            "Conceição",
            "Muñoz",
        ],
    ),
    "nl": (
        _w("Jan Sanne Pieter Femke Maarten Anouk"),
        ["van der Berg", "de Vries", "van Dijk", "de Jong", "van den Broek", "Bakker"],
    ),
    "nordic": (
        _w("Øystein Åsa Søren Linnéa Håkon Ingrid"),
        _w("Ødegård Lindqvist Sørensen Åberg Halvorsen Nyström"),
    ),
    "pl": (
        _w("Łukasz Małgorzata Paweł Zofia Jiří Tomáš"),
        _w("Wróbel Kowalczyk Dvořák Nowak Wiśniewski Černý"),
    ),
    "tr": (_w("Çağla Mehmet Gökhan Şule Ayşe"), _w("Yılmaz Öztürk Şahin Çelik Aydın")),
    "ar": (
        _w("Omar Layla Khalid Fatima Yousef"),
        ["al-Rashid", "Haddad", "El-Sayed", "Mansour", "al-Farsi"],
    ),
    "in": (
        _w("Priya Rahul Ananya Vikram Sunita Arjun"),
        _w("Sharma Iyer Venkataraman Patel Reddy Chatterjee"),
    ),
    "ea": (
        _w("Wei Xiaoming Mei Minh Thảo Hiroshi Yuki Ji-woo"),
        _w("Zhang Wang Liu Nguyễn Trần Tanaka Sato Kim"),
    ),
    "ng": (_w("Chinedu Ngozi Oluwaseun Adebayo"), _w("Okafor Adeyemi Eze Balogun")),
    "ie": (_w("Seán Siobhán Niamh Ciarán"), ["O'Brien", "McCarthy", "MacLeod", "O'Neill"]),
}

NICKNAMES = {
    "Robert": "Bob",
    "William": "Bill",
    "Elizabeth": "Liz",
    "Katherine": "Kate",
    "Michael": "Mike",
    "Thomas": "Tom",
    "Richard": "Rick",
    "Patricia": "Trish",
    "Daniel": "Dan",
    "Christopher": "Chris",
    "Jessica": "Jess",
    "Matthew": "Matt",
    "Andrew": "Andy",
    "Rebecca": "Becky",
    "Joseph": "Joe",
    "James": "Jim",
    "Jennifer": "Jen",
    "Margaret": "Peggy",
}

SIMILAR_FIRST = {
    "Daniel": "Daniela",
    "Jan": "Jana",
    "María": "Mario",
    "Andrés": "Andrea",
    "Lukas": "Luka",
    "Paweł": "Pawlina",
    "Emily": "Emil",
    "Sanne": "Sanna",
    "Mehmet": "Mehmed",
    "Wei": "Wen",
    "Priya": "Piya",
    "Omar": "Omari",
    "Zofia": "Sofia",
    "Sarah": "Sara",
    "Hélène": "Helena",
}

MOVED_TO = ["Skyward Aerospace", "Cinder Games", "Harvest Bank", "Meridian Health Group"]


def ascii_name(text: str) -> str:
    """A name as someone without the right keyboard types it (José García -> Jose Garcia)."""
    return anyascii(unicodedata.normalize("NFC", text))


def _slugify(text: str) -> str:
    return "-".join(
        w for w in "".join(c if c.isalnum() else " " for c in ascii_name(text).lower()).split()
    )


@dataclass
class Profile:
    """One member profile as indexed by a search engine."""

    url: str
    served_url: str
    title: str
    snippet: str
    name: str
    company: str
    role: str = "filler"

    def as_json(self) -> dict[str, str]:
        return {
            "url": self.url,
            "served_url": self.served_url,
            "title": self.title,
            "snippet": self.snippet,
            "name": self.name,
            "company": self.company,
            "role": self.role,
        }


@dataclass
class _Builder:
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    slugs: set[str] = field(default_factory=set)
    profiles: list[Profile] = field(default_factory=list)
    pages: list[dict[str, str]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)

    def hexid(self, n: int = 8) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def slug(self, display: str, style: str) -> str:
        base = _slugify(display)
        words = base.split("-")
        if style == "joined":
            slug = "".join(words)
        elif style == "initial":
            slug = words[0][0] + "".join(words[1:])
        elif style == "digits":
            slug = f"{base}-{self.rng.randint(1, 999)}"
        elif style == "unicode":
            slug = (
                f"{'-'.join(unicodedata.normalize('NFC', display).lower().split())}-{self.hexid(6)}"
            )
        elif style == "custom":
            slug = (
                self.rng.choice(["growth", "the", "iam", "hello", "real"])
                + self.rng.choice(["data", "sales", "builder", "maker", "coach", "nerd"])
                + str(self.rng.randint(1, 99))
            )
        elif style == "plain":
            slug = base
        else:
            slug = f"{base}-{self.hexid(self.rng.choice([6, 8, 9]))}"
        while slug in self.slugs:
            slug = f"{slug}-{self.hexid(4)}"
        self.slugs.add(slug)
        return slug

    def served(self, canonical: str, slug: str) -> str:
        """The URL as a search engine shows it: subdomains, tracking, locale, trailing slash."""
        roll = self.rng.random()
        path = canonical.split("linkedin.com", 1)[1]
        if any(ord(c) > 127 for c in slug):
            from urllib.parse import quote

            path = path.replace(slug, quote(slug))
        if roll < 0.35:
            return f"https://www.linkedin.com{path}"
        if roll < 0.55:
            cc = self.rng.choice(["uk", "de", "fr", "nl", "es", "br", "in", "ca", "au", "no"])
            return f"https://{cc}.linkedin.com{path}"
        if roll < 0.7:
            sub = self.rng.choice(["uk", "de", "fr"])
            return f"https://www.linkedin.com{path}?originalSubdomain={sub}&trk=public_profile"
        if roll < 0.8:
            return f"https://www.linkedin.com{path}/"
        if roll < 0.88:
            return f"https://www.linkedin.com{path}/{self.rng.choice(['de', 'fr', 'es', 'en'])}"
        if roll < 0.94:
            return f"https://www.linkedin.com{path}/details/experience/"
        return f"http://linkedin.com{path}#experience"

    def add_profile(
        self,
        display: str,
        company_shown: str,
        *,
        role: str,
        slug_style: str | None = None,
        headline: str | None = None,
        location: str | None = None,
        past: str | None = None,
        pub: bool = False,
    ) -> tuple[Profile, str, str]:
        rng = self.rng
        style = (
            slug_style
            or rng.choices(
                ["hex", "plain", "joined", "initial", "digits", "custom"], [40, 25, 12, 8, 8, 7]
            )[0]
        )
        if pub:
            slug = self.slug(display, "plain")
            a, b, c = self.hexid(2), self.hexid(3), self.hexid(3)
            canonical = f"https://www.linkedin.com/pub/{slug}/{a}/{b}/{c}"
        else:
            slug = self.slug(display, style)
            canonical = f"https://www.linkedin.com/in/{slug}"
        headline = headline or rng.choice(HEADLINES)
        location = location or rng.choice(LOCATIONS)
        fmt = rng.choices(["full", "company", "dash", "headline_only"], [50, 20, 15, 15])[0]
        if fmt == "full":
            title = f"{display} - {headline} - {company_shown} | LinkedIn"
        elif fmt == "company":
            title = f"{display} - {company_shown} | LinkedIn"
        elif fmt == "dash":
            title = f"{display} – {headline} – {company_shown} | LinkedIn"
        else:
            title = f"{display} - {headline} | LinkedIn"
        if len(title) > 60 and rng.random() < 0.35:
            title = title[:57].rstrip() + " ..."  # engines truncate long titles
        conns = rng.choice(["500+", "312", "87", "1K+ followers · 500+"])
        school = rng.choice(SCHOOLS)
        lang = rng.choices(["en", "de", "fr", "es"], [70, 10, 10, 10])[0]
        exp, edu, loc, past_label = {
            "en": ("Experience", "Education", "Location", "Previously"),
            "de": ("Berufserfahrung", "Ausbildung", "Ort", "Zuvor"),
            "fr": ("Expérience", "Formation", "Lieu", "Auparavant"),
            "es": ("Experiencia", "Educación", "Ubicación", "Anteriormente"),
        }[lang]
        sep = " : " if lang == "fr" else ": "
        parts = [f"{headline} at {company_shown}"] if lang == "en" and rng.random() < 0.5 else []
        parts.append(f"{exp}{sep}{company_shown}")
        if past:
            parts.append(f"{past_label}{sep}{past}")
        parts += [
            f"{edu}{sep}{school}",
            f"{loc}{sep}{location}",
            f"{conns} connections on LinkedIn",
        ]
        snippet = " · ".join(parts) + (
            f". View {display}’s profile on LinkedIn, a professional community of 1 billion members."
        )
        profile = Profile(
            url=canonical,
            served_url=self.served(canonical, slug),
            title=title,
            snippet=snippet,
            name=display,
            company=company_shown,
            role=role,
        )
        self.profiles.append(profile)
        return profile, headline, location

    def add_pages(self, display: str, slug_hint: str, company_shown: str) -> None:
        """Non-profile LinkedIn pages that mention the person or the company."""
        rng = self.rng
        kind = rng.choice(["post", "pulse", "jobs", "company"])
        cslug = _slugify(company_shown)
        if kind == "post":
            url = f"https://www.linkedin.com/posts/{slug_hint}_excited-to-share-activity-7{rng.randint(10**17, 10**18 - 1)}-{self.hexid(4)}"
            title = f"{display} on LinkedIn: Excited to share that I joined {company_shown}"
            snippet = (
                f"{display} · Excited to share that I joined {company_shown} as part of the team."
            )
        elif kind == "pulse":
            url = f"https://www.linkedin.com/pulse/what-i-learned-{cslug}-{slug_hint}"
            title = f"What I learned at {company_shown} - {display}"
            snippet = f"Article by {display} about five years at {company_shown}."
        elif kind == "jobs":
            url = f"https://www.linkedin.com/jobs/view/{rng.randint(10**9, 10**10 - 1)}"
            title = f"{company_shown} hiring {rng.choice(HEADLINES)} | LinkedIn"
            snippet = f"Posted by {display}. Join {company_shown}. Apply now."
        else:
            url = f"https://www.linkedin.com/company/{cslug}"
            title = f"{company_shown} | LinkedIn"
            snippet = f"{company_shown} | 2,345 followers on LinkedIn. Employees include {display}."
        self.pages.append({"url": url, "title": title, "snippet": snippet})

    def person(self) -> tuple[str, str, str]:
        culture = self.rng.choice(sorted(POOLS))
        firsts, lasts = POOLS[culture]
        return culture, self.rng.choice(firsts), self.rng.choice(lasts)


def _typo(rng: random.Random, text: str) -> str:
    """Swap two adjacent letters inside the longest word (a typing slip)."""
    words = text.split()
    i = max(range(len(words)), key=lambda k: len(words[k]))
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def build() -> dict[str, Any]:
    """The whole corpus and the labelled cases, deterministically."""
    b = _Builder()
    rng = b.rng
    used: set[tuple[str, str]] = set()

    def fresh() -> tuple[str, str, str]:
        while True:
            culture, first, last = b.person()
            if (first, last) not in used:
                used.add((first, last))
                return culture, first, last

    kinds = (
        ["plain"] * 40
        + ["nickname"] * 14
        + ["nickname_reverse"] * 4
        + ["ascii_input"] * 14
        + ["ascii_display"] * 8
        + ["credentials"] * 6
        + ["middle"] * 5
        + ["unicode_slug"] * 5
        + ["pub"] * 3
        + ["moved_mentioned"] * 4
        + ["moved_silent"] * 3
        + ["twin"] * 3
        + ["custom_slug"] * 4
    )
    kinds += ["none"] * 30
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        if kind in ("nickname", "nickname_reverse"):
            first = rng.choice(sorted(NICKNAMES))
            last = rng.choice(POOLS["en"][1])
            while (first, last) in used:
                last = rng.choice(POOLS["en"][1])
            used.add((first, last))
        else:
            _, first, last = fresh()
        company_in, company_shown = rng.choice(COMPANIES)
        input_name = f"{first} {last}"
        display = input_name
        tags = [kind]
        slug_style: str | None = None
        if kind == "nickname":
            display = f"{NICKNAMES[first]} {last}"
        elif kind == "nickname_reverse":
            input_name = f"{NICKNAMES[first]} {last}"
        elif kind == "ascii_input":
            input_name = ascii_name(input_name)
            if input_name == display:
                tags.append("no_diacritics")
        elif kind == "ascii_display":
            display = ascii_name(display)
        elif kind == "credentials":
            display = rng.choice(
                [f"Dr. {display}", f"{display}, PhD", f"{display}, CPA", f"{display} MBA"]
            )
        elif kind == "middle":
            display = f"{first} {rng.choice('ABCDEJKLMR')}. {last}"
        elif kind == "unicode_slug":
            slug_style = "unicode"
        elif kind == "custom_slug":
            slug_style = "custom"
        if any(ord(c) > 127 for c in f"{first}{last}"):
            tags.append("diacritics")
        if " " in last or last[:3].lower() in ("van", "de ", "al-", "el-"):
            tags.append("particle")
        if "-" in f"{first}{last}":
            tags.append("hyphenated")
        expected: str | None = None
        headline = location = None
        if kind != "none":
            shown = company_shown
            past = None
            if kind == "moved_mentioned":
                shown, past = rng.choice(MOVED_TO), company_shown
            elif kind == "moved_silent":
                shown = rng.choice(MOVED_TO)
            profile, headline, location = b.add_profile(
                display, shown, role="target", slug_style=slug_style, past=past, pub=kind == "pub"
            )
            expected = profile.url
            if kind == "twin":
                b.add_profile(display, company_shown, role="twin")
        # decoys: namesakes elsewhere, similar names here, colleagues, pages
        for _ in range(rng.choices([0, 1, 2, 3], [30, 35, 20, 15])[0]):
            other_in, other_shown = rng.choice(COMPANIES)
            if other_in != company_in:
                b.add_profile(rng.choice([display, input_name]), other_shown, role="namesake")
        if kind == "none" and rng.random() < 0.5:
            b.add_profile(input_name, rng.choice(MOVED_TO), role="namesake")
        if rng.random() < 0.35:
            sim_first = SIMILAR_FIRST.get(first)
            if sim_first is None:
                culture = next((c for c, (fs, _) in POOLS.items() if first in fs), "en")
                sim_first = rng.choice([f for f in POOLS[culture][0] if f != first])
            if (sim_first, last) not in used:
                used.add((sim_first, last))
                b.add_profile(f"{sim_first} {last}", company_shown, role="similar_name")
                tags.append("similar_name_decoy")
        for _ in range(rng.randint(0, 2)):
            _, f2, l2 = fresh()
            b.add_profile(f"{f2} {l2}", company_shown, role="colleague")
        if rng.random() < 0.4:
            b.add_pages(display, _slugify(display), company_shown)
        case: dict[str, Any] = {
            "id": f"c{i + 1:03d}",
            "name": input_name,
            "company": company_in,
            "expected": expected,
            "tags": tags,
        }
        roll = rng.random()
        if roll < 0.12:  # people type the short name: "Acme", "Northwind"
            case["company"] = company_in.split()[0].strip(",")
            tags.append("company_short")
        elif roll < 0.18:
            case["company"] = company_in.lower().replace(",", "")
            tags.append("company_lowercase")
        elif roll < 0.23:
            case["company"] = _typo(rng, company_in)
            tags.append("company_typo")
        if headline and rng.random() < 0.3:
            case["title"] = headline
        if location and rng.random() < 0.2:
            case["location"] = location.split(",")[0]
        b.cases.append(case)
    order = list(range(len(b.cases)))
    rng.shuffle(order)
    for rank, idx in enumerate(order):
        b.cases[idx]["split"] = "train" if rank % 2 == 0 else "test"
    rng.shuffle(b.profiles)
    return {
        "version": 1,
        "description": (
            "Synthetic LinkedIn profile-finding evaluation set: invented people, companies and "
            "URLs. 'profiles' and 'pages' are what the search lab indexes; 'cases' are the "
            "lookups with the expected canonical profile URL (null = the person has no profile)."
        ),
        "seed": SEED,
        "profiles": [p.as_json() for p in b.profiles],
        "pages": b.pages,
        "cases": b.cases,
    }
