"""A loopback DNS lab: a real NSD serving zones given in Python, plus two tiny misbehaving servers.

NSD is authoritative for the root as well, so every name outside the lab zones gets a fast
authoritative NXDOMAIN and nothing ever leaves 127.0.0.0/8. A zone marked ``servfail`` is
configured without a zone file, which NSD answers with SERVFAIL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import idna

from ._service import Service

NSD_BINARY = "/usr/sbin/nsd"
LAB_HOST = "127.0.0.1"

Record = tuple[str, str, str] | tuple[str, str, str, int]
"""(owner, type, rdata) or (owner, type, rdata, ttl); owner "@" is the zone apex."""


class LabError(RuntimeError):
    """The lab could not be set up (NSD missing, bad zone data, server would not start)."""


class _PortTaken(LabError):
    """NSD could not bind its port (someone took it after it was probed free)."""


def zone_name(name: str) -> str:
    """The ASCII (IDNA) form of a zone name, lower case, without the trailing dot."""
    name = name.rstrip(".").lower()
    return name if name.isascii() else idna.encode(name, uts46=True).decode("ascii")


@dataclass
class Zone:
    """One zone: records plus its default TTL and the negative-caching TTL in its SOA."""

    name: str
    records: list[Record] = field(default_factory=list)
    ttl: int = 300
    negative_ttl: int = 60
    servfail: bool = False

    @property
    def fqdn(self) -> str:
        """The absolute zone name, with the trailing dot."""
        return "." if self.name == "." else self.name + "."

    def zone_file(self, serial: int) -> str:
        """The zone in RFC 1035 master-file syntax, with a generated SOA and NS."""
        lines = [
            f"$ORIGIN {self.fqdn}",
            f"$TTL {self.ttl}",
            f"@ IN SOA ns.lab.test. hostmaster.lab.test. {serial} 3600 600 86400 {self.negative_ttl}",
            "@ IN NS ns.lab.test.",
        ]
        for record in self.records:
            owner, rdtype, rdata = record[0], record[1], record[2]
            ttl = record[3] if len(record) == 4 else self.ttl
            lines.append(f"{owner} {ttl} IN {rdtype.upper()} {rdata}")
        return "\n".join(lines) + "\n"


def free_port(host: str) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise LabError("no free port found")


_running: set[DnsLab] = set()  # strong refs: an unreferenced lab must still be stopped at exit


@atexit.register
def _stop_all() -> None:
    for lab in list(_running):
        lab.stop()


class DnsLab(Service):
    """A private NSD instance on 127.0.0.1:<free port> serving the given zones over UDP and TCP."""

    def __init__(
        self,
        zones: Mapping[str, Sequence[Record]] | None = None,
        *,
        ttl: int = 300,
        negative_ttl: int = 60,
        servfail_zones: Iterable[str] = (),
        nsd: str | None = None,
    ) -> None:
        """``nsd`` defaults to ``$DNSLAB_NSD`` or Debian's /usr/sbin/nsd."""
        self.nsd = nsd or os.environ.get("DNSLAB_NSD") or NSD_BINARY
        self.host = LAB_HOST
        self.port = 0
        self.zones: dict[str, Zone] = {".": Zone(".", negative_ttl=negative_ttl)}
        for name, records in (zones or {}).items():
            self.add_zone(name, records, ttl=ttl, negative_ttl=negative_ttl)
        for name in servfail_zones:
            self.zones[zone_name(name)] = Zone(zone_name(name), servfail=True)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._serial = int(time.time())

    @property
    def nameserver(self) -> str:
        """The "host:port" string a resolver is pointed at."""
        if self._proc is None:
            raise LabError("the DNS lab is not running")
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """NSD's log file (useful in assertion messages)."""
        if self._dir is None:
            raise LabError("the DNS lab was never started")
        return self._dir / "nsd.log"

    def add_zone(
        self,
        name: str,
        records: Sequence[Record],
        *,
        ttl: int = 300,
        negative_ttl: int = 60,
    ) -> None:
        """Add or replace a zone; call :meth:`reload` afterwards if the lab is running."""
        key = zone_name(name)
        if key in ("", "."):
            raise LabError("the root zone is managed by the lab")
        self.zones[key] = Zone(key, list(records), ttl=ttl, negative_ttl=negative_ttl)

    def start(self) -> DnsLab:
        """Write the configuration, start NSD in the foreground and wait until it answers."""
        if self._proc is not None:
            return self
        if not (shutil.which(self.nsd) and os.access(self.nsd, os.X_OK)):
            raise LabError(
                f"NSD not found at {self.nsd}: install the Debian package 'nsd' "
                "(listed in scripts/apt-packages.txt; scripts/test.sh installs it)"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="dnslab-"))
        for attempt in range(3):  # a free port can be taken between probing and NSD binding it
            self.port = self.port or free_port(self.host)
            try:
                self._launch()
            except _PortTaken:
                if attempt < 2:
                    self.port = 0
                    continue
                self.stop()
                raise
            except LabError:
                self.stop()  # the message already carries NSD's log
                raise
            _running.add(self)
            return self
        raise AssertionError("unreachable")

    def reload(self) -> None:
        """Apply zone changes by restarting NSD on the same port (new zones need a restart)."""
        self._serial += 1
        if self._proc is None:
            self.start()
            return
        self._terminate()
        self.start()

    def stop(self) -> None:
        """Stop NSD and remove its files."""
        self._terminate()
        _running.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def query(self, name: str, rdtype: str, *, timeout: float = 2.0) -> dns.message.Message:
        """Ask the lab NSD one question directly over UDP."""
        request = dns.message.make_query(name, rdtype)
        return dns.query.udp(request, self.host, port=self.port, timeout=timeout)

    def _write_config(self) -> Path:
        assert self._dir is not None
        directory = self._dir
        blocks = [
            "server:",
            f"  ip-address: {self.host}",
            f"  port: {self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            '  database: ""',
            f'  zonesdir: "{directory}"',
            f'  pidfile: "{directory / "nsd.pid"}"',
            f'  zonelistfile: "{directory / "zone.list"}"',
            f'  xfrdfile: "{directory / "xfrd.state"}"',
            f'  xfrdir: "{directory}"',
            f'  logfile: "{directory / "nsd.log"}"',
            "  server-count: 1",
            "  verbosity: 1",
            "  hide-version: yes",
            "  reuseport: no",
            "remote-control:",
            "  control-enable: no",
        ]
        for index, zone in enumerate(sorted(self.zones.values(), key=lambda z: z.name)):
            filename = f"zone{index}.zone"
            path = directory / filename
            path.unlink(missing_ok=True)
            if not zone.servfail:
                path.write_text(zone.zone_file(self._serial), encoding="utf-8")
            blocks += ["zone:", f'  name: "{zone.name}"', f'  zonefile: "{filename}"']
        config = directory / "nsd.conf"
        config.write_text("\n".join(blocks) + "\n", encoding="utf-8")
        return config

    def _launch(self) -> None:
        config = self._write_config()
        self.log_path.unlink(missing_ok=True)
        with (self.log_path.parent / "nsd.out").open("wb") as out:
            self._proc = subprocess.Popen(
                [self.nsd, "-d", "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                logs = self._logs()
                taken = "already in use" in logs or "can't bind" in logs
                raise (_PortTaken if taken else LabError)(f"NSD exited at start:\n{logs}")
            with contextlib.suppress(dns.exception.Timeout, OSError):
                if self.query(".", "SOA", timeout=0.2).rcode() == dns.rcode.NOERROR:
                    break
            if time.monotonic() > deadline:
                self._terminate()
                raise LabError(f"NSD did not answer within 15 s:\n{self._logs()}")
            time.sleep(0.05)
        self._check_zones()

    def _check_zones(self) -> None:
        bad = []
        for zone in self.zones.values():
            if zone.servfail:
                continue
            reply = self.query(zone.fqdn, "SOA")
            if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
                bad.append(zone.name)
        if bad:
            logs = self._logs()
            self._terminate()
            raise LabError(f"NSD did not load zone(s) {', '.join(bad)}:\n{logs}")

    def _logs(self) -> str:
        parts = []
        for name in ("nsd.out", "nsd.log"):
            path = self.log_path.parent / name
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)[-4000:]

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # NSD's forked helpers, should any linger


class _LoopbackServer(Service):
    """Base for the small threaded servers below: one UDP socket (and maybe TCP) on one port."""

    def __init__(self, *, tcp: bool) -> None:
        self.host = LAB_HOST
        self.port = free_port(self.host)
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((self.host, self.port))
        self._tcp: socket.socket | None = None
        if tcp:
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((self.host, self.port))
            self._tcp.listen(16)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ)
        if self._tcp is not None:
            self._selector.register(self._tcp, selectors.EVENT_READ)
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def nameserver(self) -> str:
        """The "host:port" string a resolver is pointed at."""
        return f"{self.host}:{self.port}"

    def start(self) -> _LoopbackServer:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in [self._udp, *([self._tcp] if self._tcp else []), *self._held]:
            sock.close()
        self._selector.close()

    def count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries for ``name`` (of ``rdtype``, or of any type) arrived so far."""
        key = zone_name(name)
        with self._lock:
            return sum(n for (q, t), n in self.queries.items() if q == key and rdtype in (None, t))

    def _record(self, wire: bytes) -> dns.message.Message | None:
        try:
            message = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if message.question:
            question = message.question[0]
            key = (question.name.to_text(omit_final_dot=True).lower() or ".", question.rdtype.name)
            with self._lock:
                self.queries[key] += 1
        return message

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._tcp:
                    conn, _ = sock.accept()
                    self._held.append(conn)  # accepted and never answered
                elif sock is self._udp:
                    wire, client = sock.recvfrom(65535)
                    self._on_udp(wire, client)

    def _on_udp(self, wire: bytes, client: tuple[str, int]) -> None:
        raise NotImplementedError


class BlackHoleDns(_LoopbackServer):
    """A nameserver that takes every query (UDP datagrams, TCP connections) and never answers."""

    def __init__(self) -> None:
        super().__init__(tcp=True)

    def _on_udp(self, wire: bytes, client: tuple[str, int]) -> None:
        self._record(wire)


class CountingRelay(_LoopbackServer):
    """A UDP relay in front of a lab server that counts the queries it passes on.

    Tests use it to see how many queries a client really sent. ``delay`` holds every answer
    back so that concurrent client calls overlap for certain; queries of a type in ``drop``
    are never answered and those of a type in ``servfail`` get SERVFAIL.
    """

    def __init__(
        self,
        upstream: str,
        *,
        delay: float = 0.0,
        drop: Iterable[str] = (),
        servfail: Iterable[str] = (),
    ) -> None:
        super().__init__(tcp=False)
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.drop = {t.upper() for t in drop}
        self.servfail = {t.upper() for t in servfail}

    def _on_udp(self, wire: bytes, client: tuple[str, int]) -> None:
        query = self._record(wire)
        if query is None or not query.question:
            return
        rdtype = query.question[0].rdtype.name
        if rdtype in self.drop:
            return
        threading.Thread(target=self._answer, args=(query, wire, client), daemon=True).start()

    def _answer(self, query: dns.message.Message, wire: bytes, client: tuple[str, int]) -> None:
        if self.delay:
            time.sleep(self.delay)
        if query.question[0].rdtype.name in self.servfail:
            reply = dns.message.make_response(query)
            reply.set_rcode(dns.rcode.SERVFAIL)
            answer = reply.to_wire()
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
                upstream.settimeout(5)
                upstream.sendto(wire, self.upstream)
                try:
                    answer, _ = upstream.recvfrom(65535)
                except OSError:
                    return
        if not self._stopping.is_set():
            with contextlib.suppress(OSError):
                self._udp.sendto(answer, client)


def mail_domain(*mx_addresses: str, preference: int = 10) -> list[Record]:
    """Records for a mail domain whose MX "mx.<domain>" has the given (loopback) addresses."""
    records: list[Record] = [("@", "MX", f"{preference} mx")]
    for address in mx_addresses:
        records.append(("mx", "AAAA" if ":" in address else "A", address))
    return records


def default_zones() -> dict[str, list[Record]]:
    """The suite's standard mail domains; every address is in 127.0.0.0/8 or ::1."""
    return {
        "acme.test": mail_domain("127.0.0.2"),
        "multi.test": [
            ("@", "MX", "20 mx2"),
            ("@", "MX", "10 mx1"),
            ("mx1", "A", "127.0.0.6"),
            ("mx2", "A", "127.0.0.7"),
        ],
        "samepref.test": [
            ("@", "MX", "10 mx-b"),
            ("@", "MX", "10 mx-a"),
            ("@", "MX", "5 mx-c"),
            ("mx-a", "A", "127.0.0.21"),
            ("mx-b", "A", "127.0.0.22"),
            ("mx-c", "A", "127.0.0.23"),
        ],
        "nomx.test": [("@", "A", "127.0.0.8")],
        "dualstack.test": [
            ("@", "AAAA", "::1"),
            ("@", "A", "127.0.0.14"),
            ("@", "A", "127.0.0.13"),
        ],
        "aaaaonly.test": [("@", "AAAA", "::1")],
        "nullmx.test": [("@", "MX", "0 ."), ("@", "A", "127.0.0.8")],
        "badmx.test": [("@", "MX", "10 mx.missing.badmx.test.")],
        "empty.test": [],
        "xn--bcher-kva.test": mail_domain("127.0.0.15"),
        "mixedmx.test": [
            ("@", "MX", "10 mx"),
            ("@", "MX", "20 mx.dual.test."),
            ("mx", "A", "127.0.0.16"),
        ],
        "dual.test": [("mx", "A", "127.0.0.17"), ("mx", "AAAA", "::1")],
        "mixednull.test": [("@", "MX", "0 ."), ("@", "MX", "10 mx.acme.test.")],
        "cname.test": [("mail", "CNAME", "acme.test.")],
    }


def default_lab() -> DnsLab:
    """A (not yet started) lab with :func:`default_zones`, plus:

    shortttl.test (every TTL, negative ones too, is 1 s) and servfail.test (NSD: SERVFAIL).
    """
    lab = DnsLab(default_zones(), servfail_zones=["servfail.test"])
    lab.add_zone("shortttl.test", mail_domain("127.0.0.18"), ttl=1, negative_ttl=1)
    return lab
