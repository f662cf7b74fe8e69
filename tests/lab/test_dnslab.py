"""The DNS lab itself: zones from Python, reload, failure reporting, clean shutdown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from lab.dnslab import BlackHoleDns, DnsLab, LabError, Zone, mail_domain, zone_name

ROOT = Path(__file__).resolve().parents[2]


def test_zone_file_has_soa_ns_and_per_record_ttls() -> None:
    zone = Zone("acme.test", [("@", "mx", "10 mx"), ("mx", "A", "127.0.0.2", 7)], ttl=30)
    text = zone.zone_file(serial=5)
    assert "$ORIGIN acme.test.\n$TTL 30\n" in text
    assert "@ IN SOA ns.lab.test. hostmaster.lab.test. 5 " in text
    assert "@ 30 IN MX 10 mx\n" in text
    assert "mx 7 IN A 127.0.0.2\n" in text
    assert Zone(".").fqdn == "."


def test_zone_names_are_idna() -> None:
    assert zone_name("Bücher.Test.") == "xn--bcher-kva.test"


def test_mail_domain_records() -> None:
    assert mail_domain("127.0.0.9", "::1", preference=5) == [
        ("@", "MX", "5 mx"),
        ("mx", "A", "127.0.0.9"),
        ("mx", "AAAA", "::1"),
    ]


def test_black_hole_takes_udp_and_tcp_queries_and_never_answers() -> None:
    query = dns.message.make_query("acme.test.", "MX")
    with BlackHoleDns() as hole:
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(query, hole.host, port=hole.port, timeout=0.2)
        with pytest.raises(dns.exception.Timeout):
            dns.query.tcp(query, hole.host, port=hole.port, timeout=0.2)
        assert hole.count("ACME.test.", "MX") == 1  # the UDP one; TCP is accepted, never read
        assert hole.count("acme.test", "A") == 0


def test_root_zone_is_reserved() -> None:
    with pytest.raises(LabError, match="root"):
        DnsLab().add_zone(".", [])


def test_nameserver_needs_a_running_lab() -> None:
    with pytest.raises(LabError, match="not running"):
        _ = DnsLab().nameserver


def test_missing_nsd_is_reported() -> None:
    with pytest.raises(LabError, match="NSD not found"):
        DnsLab(nsd="/nonexistent/nsd").start()


@pytest.mark.lab
def test_bad_zone_data_is_reported_with_nsd_log() -> None:
    lab = DnsLab({"broken.test": [("@", "MX", "not-a-number mx")]})
    with pytest.raises(LabError, match=r"broken\.test"):
        lab.start()
    lab.stop()


@pytest.mark.lab
def test_add_zone_and_reload_keep_the_port_and_serve_the_new_zone() -> None:
    with DnsLab({"one.test": [("@", "A", "127.0.0.31")]}) as lab:
        port = lab.port
        assert lab.query("two.test.", "A").rcode() == dns.rcode.NXDOMAIN
        lab.add_zone("two.test", [("@", "A", "127.0.0.32")], ttl=1)
        lab.reload()
        assert lab.port == port
        answer = lab.query("two.test.", "A").answer
        assert [(rrset.ttl, [rd.to_text() for rd in rrset]) for rrset in answer] == [
            (1, ["127.0.0.32"])
        ]
        assert lab.query("one.test.", "A").answer[0].rdtype == dns.rdatatype.A
    with pytest.raises((dns.exception.Timeout, OSError)):  # stopped: the port is silent
        lab.query("one.test.", "A", timeout=0.3)


@pytest.mark.lab
def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    lab = DnsLab({"one.test": [("@", "A", "127.0.0.31")]})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((lab.host, 0))
        taken = squatter.getsockname()[1]
        lab.port = taken
        with lab:
            assert lab.port != taken
            assert lab.query("one.test.", "A").rcode() == dns.rcode.NOERROR


@pytest.mark.lab
def test_servfail_zone_answers_servfail() -> None:
    with DnsLab(servfail_zones=["down.test"]) as lab:
        assert lab.query("down.test.", "MX").rcode() == dns.rcode.SERVFAIL
        assert lab.query("elsewhere.example.", "MX").rcode() == dns.rcode.NXDOMAIN


def test_suite_fails_rather_than_skips_without_nsd(tmp_path: Path) -> None:
    env = {**os.environ, "DNSLAB_NSD": str(tmp_path / "no-nsd")}
    test = "tests/emailintel/test_dns.py::test_single_mx"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout
    assert "NSD not found" in run.stdout
    assert "1 error" in run.stdout
    assert "skipped" not in run.stdout
