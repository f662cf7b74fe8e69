"""Offline lists: disposable (with subdomains), free providers, role local parts, gibberish."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from disposable_email_domains import blocklist
from hypothesis import given
from hypothesis import strategies as st

from emailintel.address import parse_address
from emailintel.lists import (
    Lists,
    data_version,
    default_lists,
    looks_gibberish,
    normalize_domain,
    normalize_role,
    parse_version,
    read_data_lines,
)

DISPOSABLE_SAMPLE = sorted(blocklist)[::97]
SUBDOMAIN = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@pytest.fixture(scope="module")
def lists() -> Lists:
    return default_lists()


class TestLoading:
    def test_loaded_once(self, lists: Lists) -> None:
        assert default_lists() is lists

    def test_version_names_every_source(self, lists: Lists) -> None:
        assert f"free={data_version('free_providers.txt')}" in lists.version
        assert f"role={data_version('role_local_parts.txt')}" in lists.version
        assert f"disposable={metadata.version('disposable-email-domains')}" in lists.version

    def test_sizes(self, lists: Lists) -> None:
        assert len(lists.disposable) == len({d.lower() for d in blocklist})
        assert len(lists.free) >= 300
        assert len(lists.role) >= 250

    def test_parse_version_errors_without_version_line(self) -> None:
        assert parse_version("# x\n# version: 1.2\ngmail.com\n") == "1.2"
        with pytest.raises(ValueError, match="version"):
            parse_version("# no version here\ngmail.com\n")
        with pytest.raises(ValueError, match="version"):
            parse_version("# version:\n")

    @pytest.mark.parametrize("name", ["free_providers.txt", "typo_targets.txt"])
    def test_every_packaged_domain_is_a_valid_mail_domain(self, name: str) -> None:
        for line in read_data_lines(name):
            if line.startswith("["):
                continue
            domain = line if "." in line else f"example.{line}"
            assert parse_address(f"x@{domain}").domain == domain

    def test_every_role_entry_is_a_valid_local_part(self) -> None:
        for line in read_data_lines("role_local_parts.txt"):
            assert parse_address(f"{line}@example.com").local_part.lower() == line

    def test_import_does_not_load_lists(self) -> None:
        code = (
            "import sys, emailintel.lists, emailintel.typo, emailintel.address\n"
            "assert 'disposable_email_domains' not in sys.modules\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


class TestDisposable:
    @pytest.mark.parametrize("domain", DISPOSABLE_SAMPLE)
    def test_listed_domains(self, lists: Lists, domain: str) -> None:
        assert lists.is_disposable(domain)
        assert lists.is_disposable(domain.upper() + ".")

    @given(st.sampled_from(DISPOSABLE_SAMPLE), st.lists(SUBDOMAIN, min_size=1, max_size=3))
    def test_subdomains_of_listed_domains(self, domain: str, labels: list[str]) -> None:
        assert default_lists().is_disposable(".".join([*labels, domain]))

    @pytest.mark.parametrize(
        "domain",
        ["gmail.com", "example.com", "com", "", "nomailinator.example", "mailinator.com.example"],
    )
    def test_not_disposable(self, lists: Lists, domain: str) -> None:
        assert not lists.is_disposable(domain)

    def test_mailinator_and_subdomain(self, lists: Lists) -> None:
        assert lists.is_disposable("mailinator.com")
        assert lists.is_disposable("x.y.MAILINATOR.com")


class TestFreeAndRole:
    @pytest.mark.parametrize(
        "domain",
        [
            "gmail.com",
            "GMAIL.COM.",
            "googlemail.com",
            "yahoo.co.uk",
            "hotmail.fr",
            "outlook.com",
            "live.com",
            "msn.com",
            "aol.com",
            "icloud.com",
            "me.com",
            "proton.me",
            "gmx.de",
            "web.de",
            "mail.ru",
            "yandex.ru",
            "qq.com",
            "163.com",
            "126.com",
            "naver.com",
            "zoho.com",
        ],
    )
    def test_free_providers(self, lists: Lists, domain: str) -> None:
        assert lists.is_free_provider(domain)

    @pytest.mark.parametrize("domain", ["acme.com", "mail.gmail.com", "gmail.co", "example.org"])
    def test_not_free(self, lists: Lists, domain: str) -> None:
        assert not lists.is_free_provider(domain)

    @pytest.mark.parametrize(
        "local",
        [
            "info",
            "INFO",
            "sales",
            "support",
            "contact",
            "billing",
            "noreply",
            "no-reply",
            "no.reply",
            "no_reply",
            "NoReply+bounce",
            "postmaster",
            "hostmaster",
            "webmaster",
            "abuse",
            "hr",
            "jobs",
            "careers",
            "marketing",
            "office",
            "team",
            "hello",
            "help",
            '"info"',
            "do-not-reply",
        ],
    )
    def test_role_parts(self, lists: Lists, local: str) -> None:
        assert lists.is_role(local)

    @pytest.mark.parametrize(
        "local", ["john.smith", "jsmith", "mueller", "anna+info", "informatics"]
    )
    def test_personal_parts(self, lists: Lists, local: str) -> None:
        assert not lists.is_role(local)

    def test_normalisers(self) -> None:
        assert normalize_role(" No.Reply_x-y+tag ") == "noreplyxy"
        assert normalize_domain(" Bücher.DE. ") == "xn--bcher-kva.de"
        assert normalize_domain("a" * 70 + "ü.de") == "a" * 70 + "ü.de"


class TestAdditions:
    def test_additions_extend_a_copy(self, lists: Lists) -> None:
        custom = lists.with_additions(
            disposable=["Temp-Inbox.example", " "],
            free=["corpmail.example"],
            role=["Front.Desk.Two"],
        )
        assert custom.is_disposable("x.temp-inbox.example")
        assert custom.is_free_provider("CorpMail.example")
        assert custom.is_role("front-desk-two")
        assert custom.version == lists.version + "+user"
        assert not lists.is_disposable("temp-inbox.example")
        assert not lists.is_free_provider("corpmail.example")
        assert not lists.is_role("frontdesktwo")
        assert custom.with_additions(role=["x"]).version == custom.version

    def test_allow_lifts_false_positives(self, lists: Lists) -> None:
        custom = lists.with_additions(allow=["mailinator.com", "gmail.com", "info"])
        assert not custom.is_disposable("mailinator.com")
        assert not custom.is_disposable("sub.mailinator.com")
        assert not custom.is_free_provider("gmail.com")
        assert not custom.is_role("Info")
        assert custom.is_role("sales")

    def test_allow_a_subdomain_only(self, lists: Lists) -> None:
        custom = lists.with_additions(allow=["good.mailinator.com"])
        assert not custom.is_disposable("good.mailinator.com")
        assert not custom.is_disposable("x.good.mailinator.com")
        assert custom.is_disposable("bad.mailinator.com")
        assert custom.is_disposable("mailinator.com")

    def test_idn_additions_match_both_forms(self, lists: Lists) -> None:
        custom = lists.with_additions(disposable=["bücher.de"])
        assert custom.is_disposable("xn--bcher-kva.de")
        assert custom.is_disposable("mail.BÜCHER.de")

    def test_lists_are_immutable(self, lists: Lists) -> None:
        with pytest.raises(AttributeError):
            lists.free = frozenset()  # type: ignore[misc]


REAL_LOCAL_PARTS = [
    "john.smith",
    "jsmith",
    "mueller",
    "müller",
    "szczepanski",
    "strzelczyk",
    "hirschsprung",
    "schwarzkopf",
    "wojciechowski",
    "krzysztof.brzeczyszczykiewicz",
    "tchaikovsky",
    "o.brien",
    "mary-jane",
    "j.doe1985",
    "anna_k",
    "nguyen",
    "xu",
    "ng",
    "al-khwarizmi",
    "mcdonald",
    "sjostrom",
    "info",
    "sales2024",
    "john.smith+newsletter",
    "dmitriy.v",
    "b2b",
    "team42",
    "r2d2",
    "abc123",
    "jp.morgan",
    "thx1138",
    "k.lmnopq",
]
GIBBERISH_LOCAL_PARTS = [
    "xk7qzpw9vb3",
    "a8f3k2m9x1",
    "3f2b9c1d4e5a6b7c8d9e",
    "qwrtzpxkvb",
    "zxcvbnmlkj",
    "john.xk7qzpw9vb3",
]


class TestGibberish:
    @pytest.mark.parametrize("local", REAL_LOCAL_PARTS)
    def test_real_names_are_not_gibberish(self, local: str) -> None:
        assert not looks_gibberish(local)

    @pytest.mark.parametrize("local", GIBBERISH_LOCAL_PARTS)
    def test_random_strings_are_gibberish(self, local: str) -> None:
        assert looks_gibberish(local)

    def test_tag_is_ignored(self) -> None:
        assert not looks_gibberish("anna+xk7qzpw9vb3")

    @given(
        st.lists(
            st.builds(
                lambda c, v: c + v,
                st.sampled_from(
                    ["b", "ch", "d", "k", "l", "m", "n", "p", "r", "s", "sch", "t", "w", "z"]
                ),
                st.sampled_from(["a", "e", "i", "o", "u", "y", "ie", "ou"]),
            ),
            min_size=1,
            max_size=6,
        ),
        st.sampled_from(["", ".", "_", "-"]),
        st.sampled_from(["", "1", "85", "2024"]),
    )
    def test_syllable_names_never_flagged(
        self, syllables: list[str], sep: str, digits: str
    ) -> None:
        half = len(syllables) // 2
        local = "".join(syllables[:half]) + sep + "".join(syllables[half:]) + digits
        assert not looks_gibberish(local)
