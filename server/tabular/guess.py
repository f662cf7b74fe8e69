"""Guesses about columns (pure): each value's type, a column's type, and which columns hold the
email, names, company, domain and LinkedIn URL, each with a confidence in [0, 1]."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FIELDS",
    "ColumnGuess",
    "FieldGuess",
    "ValueType",
    "column_type",
    "guess_fields",
    "value_type",
]

ValueType = Literal["email", "linkedin_url", "url", "domain", "phone", "number", "date", "text"]
Field = Literal["email", "first_name", "last_name", "full_name", "company", "domain", "linkedin"]
FIELDS: tuple[Field, ...] = (
    "email",
    "first_name",
    "last_name",
    "full_name",
    "company",
    "domain",
    "linkedin",
)

_EMAIL = re.compile(r"^[^@\s<>(),;:\"]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$")
_LINKEDIN = re.compile(
    r"^(https?://)?([a-z]{2,3}\.)?linkedin\.com/(in|pub|company|school)/[^\s]+$", re.I
)
_URL = re.compile(r"^(https?://|www\.)[^\s]+$", re.I)
_DOMAIN = re.compile(
    r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$", re.I
)
_PHONE = re.compile(r"^\+?[\d\s().\-/]{7,24}$")
_NUMBER = re.compile(r"^[+-]?(\d{1,3}([ ,.']\d{3})+|\d+)([.,]\d+)?([eE][+-]?\d+)?%?$")
_DATE = re.compile(
    r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def value_type(value: str) -> ValueType | None:
    """The most specific type of one cell (None for an empty one)."""
    text = value.strip()
    if not text:
        return None
    if len(text) > 2048:
        return "text"
    if _EMAIL.match(text):
        return "email"
    if _LINKEDIN.match(text):
        return "linkedin_url"
    if _URL.match(text):
        return "url"
    if _DATE.match(text):
        return "date"
    if _NUMBER.match(text) and not (
        text.startswith("+") or (text.startswith("0") and len(text) > 6)
    ):
        return "number"
    if _PHONE.match(text):
        digits = sum(ch.isdigit() for ch in text)
        if 7 <= digits <= 15:
            return "phone"
    if _DOMAIN.match(text) and not text.replace(".", "").isdigit():
        return "domain"
    return "text"


@dataclass(frozen=True)
class ColumnGuess:
    """A column's type: the type of most of its non-empty sample values, and their share."""

    type: ValueType
    confidence: float
    non_empty: int


def column_type(values: Iterable[str], threshold: float = 0.8) -> ColumnGuess:
    """``text`` unless one type covers ``threshold`` of the non-empty values."""
    tally = Counter(t for t in (value_type(v) for v in values) if t is not None)
    total = sum(tally.values())
    if not total:
        return ColumnGuess("text", 0.0, 0)
    kind, count = tally.most_common(1)[0]
    share = count / total
    if share < threshold:
        return ColumnGuess("text", round(tally["text"] / total, 3), total)
    return ColumnGuess(kind, round(share, 3), total)


def _norm(header: str) -> str:
    decomposed = unicodedata.normalize("NFKD", header.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch))


_SYNONYMS: dict[Field, tuple[str, ...]] = {
    "email": (
        "email",
        "emails",
        "mail",
        "emailaddress",
        "emailaddr",
        "workemail",
        "businessemail",
        "professionalemail",
        "contactemail",
        "courriel",
        "adressemail",
        "adresseemail",
        "adressecourriel",
        "correo",
        "correoelectronico",
        "email1",
        "primaryemail",
        "epost",
        "emailadresse",
        "indirizzoemail",
        "emailadres",
    ),
    "first_name": (
        "firstname",
        "first",
        "fname",
        "givenname",
        "forename",
        "prenom",
        "vorname",
        "nombre",
        "nome",
        "voornaam",
        "contactfirstname",
        "primeironome",
    ),
    "last_name": (
        "lastname",
        "last",
        "lname",
        "surname",
        "familyname",
        "nom",
        "nomdefamille",
        "nachname",
        "familienname",
        "apellido",
        "apellidos",
        "cognome",
        "achternaam",
        "sobrenome",
        "contactlastname",
    ),
    "full_name": (
        "name",
        "fullname",
        "contactname",
        "contact",
        "person",
        "personname",
        "nomcomplet",
        "nombrecompleto",
        "vollstandigername",
        "nomecompleto",
        "leadname",
        "prospectname",
    ),
    "company": (
        "company",
        "companyname",
        "organization",
        "organisation",
        "organizationname",
        "employer",
        "account",
        "accountname",
        "business",
        "entreprise",
        "societe",
        "nomentreprise",
        "empresa",
        "firma",
        "unternehmen",
        "azienda",
        "bedrijf",
        "currentcompany",
    ),
    "domain": (
        "domain",
        "companydomain",
        "website",
        "companywebsite",
        "web",
        "site",
        "siteweb",
        "siteinternet",
        "sitioweb",
        "webseite",
        "url",
        "companyurl",
        "homepage",
        "domainname",
    ),
    "linkedin": (
        "linkedin",
        "linkedinurl",
        "linkedinprofile",
        "linkedinprofileurl",
        "profileurl",
        "linkedinlink",
        "personlinkedinurl",
        "li",
        "liurl",
        "linkedinpage",
    ),
}
_EXPECTED: dict[Field, tuple[ValueType, ...]] = {
    "email": ("email",),
    "first_name": ("text",),
    "last_name": ("text",),
    "full_name": ("text",),
    "company": ("text", "domain"),
    "domain": ("domain", "url"),
    "linkedin": ("linkedin_url",),
}
_BY_VALUES: dict[ValueType, Field] = {
    "email": "email",
    "linkedin_url": "linkedin",
    "domain": "domain",
}


@dataclass(frozen=True)
class FieldGuess:
    """The column guessed to hold a field, and how sure: header and values agreeing ~0.95,
    header alone 0.6–0.8, values alone up to 0.7."""

    field: Field
    column: str
    confidence: float


def _score(field: Field, column: str, guess: ColumnGuess) -> float:
    name = _norm(column)
    header = 0.0
    if name in _SYNONYMS[field]:
        header = 0.8
    elif any(len(s) >= 4 and s in name for s in _SYNONYMS[field]):
        header = 0.6
    agrees = guess.non_empty > 0 and guess.type in _EXPECTED[field]
    if header:
        if agrees:
            return min(1.0, header + 0.15 + 0.05 * guess.confidence)
        if guess.non_empty == 0:
            return header
        return header * 0.5
    if _BY_VALUES.get(guess.type) == field:
        return round(0.7 * guess.confidence, 3)
    return 0.0


def guess_fields(
    columns: Sequence[str], types: Mapping[str, ColumnGuess], floor: float = 0.3
) -> list[FieldGuess]:
    """The best column for each field (each column used once, most confident first)."""
    candidates = sorted(
        (
            (round(_score(field, column, types[column]), 3), FIELDS.index(field), field, column)
            for field in FIELDS
            for column in columns
        ),
        key=lambda c: (-c[0], c[1], columns.index(c[3])),
    )
    taken_fields: set[str] = set()
    taken_columns: set[str] = set()
    out: list[FieldGuess] = []
    for score, _, field, column in candidates:
        if score < floor or field in taken_fields or column in taken_columns:
            continue
        taken_fields.add(field)
        taken_columns.add(column)
        out.append(FieldGuess(field, column, score))
    return sorted(out, key=lambda g: FIELDS.index(g.field))
