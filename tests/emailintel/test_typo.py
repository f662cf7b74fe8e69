"""Typo suggestions: keyboard-aware true positives, and silence on real and ordinary domains."""

from __future__ import annotations

import os

import publicsuffixlist
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel import _keyboard
from emailintel._keyboard import NEIGHBOURS, adjacent, typo_cost
from emailintel.address import parse_address
from emailintel.errors import AddressError, InjectionError
from emailintel.lists import default_lists
from emailintel.typo import _parse_targets, suggest, suggest_domain, target_index, tld_exists

TRUE_POSITIVES = [
    ("gmial.com", "gmail.com"),
    ("gmai.com", "gmail.com"),
    ("gnail.com", "gmail.com"),
    ("gamil.com", "gmail.com"),
    ("gmaill.com", "gmail.com"),
    ("gmail.con", "gmail.com"),
    ("gmail.cmo", "gmail.com"),
    ("gmail.comm", "gmail.com"),
    ("gmail.ocm", "gmail.com"),
    ("gmail.co", "gmail.com"),
    ("gmail.om", "gmail.com"),
    ("gmailcom", "gmail.com"),
    ("GMIAL.CON.", "gmail.com"),
    ("hotmial.con", "hotmail.com"),
    ("hotmai.com", "hotmail.com"),
    ("hotmial.com", "hotmail.com"),
    ("hotmail.couk", "hotmail.co.uk"),
    ("hotmail.co.ukk", "hotmail.co.uk"),
    ("yaho.com", "yahoo.com"),
    ("yahooo.com", "yahoo.com"),
    ("yhaoo.com", "yahoo.com"),
    ("yahooo.co.in", "yahoo.co.in"),
    ("outlok.com", "outlook.com"),
    ("outllok.com", "outlook.com"),
    ("iclod.com", "icloud.com"),
    ("icloud.con", "icloud.com"),
    ("aol.con", "aol.com"),
    ("aol.cmo", "aol.com"),
    ("comcats.net", "comcast.net"),
    ("protonmial.com", "protonmail.com"),
    ("acme.con", "acme.com"),
    ("acme.cmo", "acme.com"),
    ("acme.nte", "acme.net"),
    ("acme.orgg", "acme.org"),
    ("mail.acme.con", "mail.acme.com"),
    ("acme.co.uj", "acme.co.uk"),
]

FALSE_POSITIVES = [
    "acme.com",
    "mailo.com",
    "gmrit.edu.in",
    "example.co",
    "company.cn",
    "shop.shop",
    "acme.shop",
    "wahoo.com",
    "cloud.com",
    "email.com",
    "mail.com",
    "web.co",
    "live.co",
    "sky.co",
    "gmx.co",
    "acme.io",
    "acme.ai",
    "acme.de",
    "acme.cm",
    "acme.om",
    "acme.ne",
    "mailinator.com",
    "yopmail.com",
    "guerrillamail.com",
    "mymail.com",
    "never.com",
    "gmail.de",
    "gmail.com.br",
    "mail.gmail.com",
    "hotels.com",
    "verizon.com",
    "acme.test",
    "bücher.de",
    "xn--bcher-kva.de",
    "acme.c",
    "[192.0.2.1]",
    "",
    ".",
    "gmail..com",
    "a.b.c.d.e",
    "gmail.con" + "x" * 300,
    "acme." + "c" * 60,
    "gmial." + "x" * 60,
]


class TestSuggestDomain:
    @pytest.mark.parametrize(("typed", "meant"), TRUE_POSITIVES)
    def test_true_positives(self, typed: str, meant: str) -> None:
        assert suggest_domain(typed) == meant

    @pytest.mark.parametrize("domain", FALSE_POSITIVES)
    def test_false_positives_yield_none(self, domain: str) -> None:
        assert suggest_domain(domain) is None

    def test_no_known_domain_is_corrected(self) -> None:
        lists = default_lists()
        known = sorted(lists.free | target_index().domains)
        assert [d for d in known if suggest_domain(d) is not None] == []

    def test_disposable_domains_only_get_provider_suggestions(self) -> None:
        providers = target_index().domains
        for domain in sorted(default_lists().disposable):
            found = suggest_domain(domain)
            assert found is None or found in providers, (domain, found)

    def test_ordinary_registered_domains_are_left_alone(self) -> None:
        path = os.path.join(os.path.dirname(publicsuffixlist.__file__), "public_suffix_list.dat")
        with open(path, encoding="utf-8") as fh:
            private = fh.read().split("===BEGIN PRIVATE DOMAINS===", 1)[1]
        domains = {
            line.lstrip("*.!")
            for line in private.splitlines()
            if line and not line.startswith("//") and line.isascii() and "." in line
        }
        hits = [d for d in domains if suggest_domain(d) is not None]
        assert len(domains) > 1000
        assert len(hits) <= len(domains) // 200, hits

    @given(
        st.sampled_from(["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com"]),
        st.data(),
    )
    def test_one_neighbouring_key_slip_is_found(self, target: str, data: st.DataObject) -> None:
        sld, _, suffix = target.partition(".")
        pos = data.draw(st.integers(min_value=1, max_value=len(sld) - 1))
        key = data.draw(st.sampled_from(sorted(k for k in NEIGHBOURS[sld[pos]] if k.isalpha())))
        typed = f"{sld[:pos]}{key}{sld[pos + 1 :]}.{suffix}"
        if typed not in default_lists().free:
            assert suggest_domain(typed) == target

    @given(st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True))
    def test_suggestions_are_known_fixed_points(self, domain: str) -> None:
        found = suggest_domain(domain)
        if found is not None:
            assert found != domain
            assert suggest_domain(found) is None
            assert parse_address(f"x@{found}").domain == found

    def test_tld_existence(self) -> None:
        assert tld_exists("com")
        assert tld_exists("co")
        assert not tld_exists("con")
        assert not tld_exists("test")

    def test_target_file_sections(self) -> None:
        assert _parse_targets(["[providers]", "Gmail.com", "[suffixes]", "com"]) == (
            ["gmail.com"],
            ["com"],
        )
        with pytest.raises(ValueError, match="outside a section"):
            _parse_targets(["gmail.com"])


class TestSuggestAddress:
    def test_whole_address_is_corrected(self) -> None:
        assert suggest("John.Smith@gmial.con") == "John.Smith@gmail.com"

    def test_parsed_address_is_accepted(self) -> None:
        assert suggest(parse_address("anna@hotmial.com")) == "anna@hotmail.com"

    def test_unparsable_domain_still_gets_a_suggestion(self) -> None:
        assert suggest("john@gmailcom") == "john@gmail.com"

    @pytest.mark.parametrize(
        "raw", ["john@acme.com", "not an address", "@gmailcom", "a b@gmailcom", "a@[192.0.2.1]"]
    )
    def test_no_suggestion(self, raw: str) -> None:
        assert suggest(raw) is None

    def test_injection_still_raises(self) -> None:
        with pytest.raises(InjectionError):
            suggest("a@gmial.com\r\nRCPT TO:<b@c.com>")

    def test_non_string_raises(self) -> None:
        with pytest.raises(AddressError):
            suggest(42)  # type: ignore[arg-type]

    def test_suggestion_never_invalidates(self) -> None:
        parsed = parse_address("anna@gmial.com")
        assert suggest(parsed) == "anna@gmail.com"
        assert parsed.normalized == "anna@gmial.com"


class TestKeyboard:
    def test_adjacency_is_symmetric(self) -> None:
        for key, near in NEIGHBOURS.items():
            assert key not in near
            for other in near:
                assert adjacent(other, key)

    def test_qwerty_neighbours(self) -> None:
        for a, b in [("g", "h"), ("m", "n"), ("o", "p"), ("s", "w"), ("m", ","), (",", ".")]:
            assert adjacent(a, b)
        for a, b in [("g", "m"), ("q", "p"), ("a", "l")]:
            assert not adjacent(a, b)
        assert not adjacent("é", "e")

    @given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", max_size=12))
    def test_identity_costs_nothing(self, word: str) -> None:
        assert typo_cost(word, word) == 0

    @given(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=10),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", max_size=10),
    )
    def test_cost_is_at_least_half_an_edit_per_difference(self, a: str, b: str) -> None:
        if a != b:
            assert typo_cost(a, b) >= _keyboard.SLIP

    def test_slips_cost_less_than_edits(self) -> None:
        assert typo_cost("gnail", "gmail") == _keyboard.SLIP
        assert typo_cost("gmial", "gmail") == _keyboard.SLIP
        assert typo_cost("yaho", "yahoo") == _keyboard.SLIP
        assert typo_cost("gmai", "gmail") == _keyboard.EDIT
        assert typo_cost("email", "gmail") == _keyboard.SUBSTITUTE
        assert typo_cost("mail", "gmail") == _keyboard.DROPPED_FIRST
        assert typo_cost("xmail", "mail") == _keyboard.DROPPED_FIRST
        assert typo_cost("om", "com", penalise_first=False) == _keyboard.EDIT
