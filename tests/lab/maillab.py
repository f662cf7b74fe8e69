"""A loopback "mail internet": a private Postfix instance plus postgrey, configured from Python.

Every MX is a Postfix ``smtpd`` listener on its own 127.x.y.z:25 address (one /24 per lab,
picked free at start so concurrent test runs do not collide). Domains, users, catch-all,
greylisting and per-listener limits are given as data; :meth:`MailLab.dns_zones` exports the
domain -> MX -> address mapping for the NSD lab (tests/lab/dnslab.py) to serve.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._service import Service

POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"
POSTGREY = "/usr/sbin/postgrey"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
SASL_REALM = "mail-lab.test"
SUBMISSION_OCTET, SUBMISSION_PORT = 1, 587
DEFAULT_USERS = ("john.smith", "jane.doe", "info", "sales", "postmaster")

Profile = Literal["standard", "strict", "bench", "tarpit", "dead"]
DnsShape = Literal["mx", "a_only", "null_mx"]
Record = tuple[str, str, str]


class MailLabError(RuntimeError):
    """The mail lab could not be set up (package missing, bad data, daemon would not start)."""


@dataclass(frozen=True)
class Listener:
    """One MX host: a Postfix smtpd on ``<lab /24>.<octet>:25`` answering as ``mx_host``.

    Profiles: ``standard`` (Postfix defaults, anvil limits apply to loopback), ``strict`` (low
    error, recipient and connection limits), ``bench`` (``in_flow_delay = 0``), ``tarpit`` (the
    greeting comes after ``MailLab.tarpit_seconds``), ``dead`` (nothing listens: refused).
    """

    name: str
    mx_host: str
    octet: int
    profile: Profile = "standard"


@dataclass(frozen=True)
class MailDomain:
    """A mail domain: its MX listeners in preference order and who has a mailbox there.

    ``dns``: ``mx`` publishes MX records; ``a_only`` publishes only an A record (the first
    listener's address: RFC 5321 implicit MX); ``null_mx`` publishes ``MX 0 .`` (RFC 7505) plus
    that A record as a trap that a correct verifier never connects to.
    """

    name: str
    mx: tuple[str, ...] = ("main",)
    users: tuple[str, ...] = DEFAULT_USERS
    catch_all: bool = False
    greylist: bool = False
    dns: DnsShape = "mx"

    def addresses(self) -> list[str]:
        """The valid addresses of this domain."""
        return [f"{user}@{self.name}" for user in self.users]


@dataclass(frozen=True)
class StrictLimits:
    """The ``strict`` profile's smtpd limits (low enough for a test to hit them)."""

    recipient_limit: int = 5
    soft_error_limit: int = 2
    hard_error_limit: int = 4
    connection_count_limit: int = 2
    connection_rate_limit: int = 30


_running: weakref.WeakSet[MailLab] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for lab in list(_running):
        lab.stop()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(eq=False)
class MailLab(Service):
    """Start with :meth:`start` (or ``with``); everything lives under a temporary directory."""

    listeners: Sequence[Listener] = field(default_factory=list)
    domains: Sequence[MailDomain] = field(default_factory=list)
    greylist_delay: int = 2
    greylist_text: str | None = None  # postgrey's --greylist-text (%s: seconds left); None: default
    tarpit_seconds: int = 3
    strict: StrictLimits = field(default_factory=StrictLimits)
    in_flow_delay: str = "1s"
    tls: bool = True
    postfix: str = POSTFIX
    postmap: str = POSTMAP
    postgrey: str = POSTGREY
    workdir: Path | None = None  # parent of the lab's temporary directory (default: $TMPDIR)
    # {user: password}: adds a submission listener (:attr:`submission`) relaying only for
    # clients that authenticated (cyrus SASL, sasldb, PLAIN/LOGIN, only after STARTTLS).
    sasl_users: Mapping[str, str] = field(default_factory=dict)
    saslpasswd2: str = SASLPASSWD2

    def __post_init__(self) -> None:
        names = [lst.name for lst in self.listeners]
        octets = [lst.octet for lst in self.listeners]
        if len(set(names)) != len(names) or len(set(octets)) != len(octets):
            raise MailLabError("listener names and octets must be unique")
        if any(not 2 <= o <= 254 for o in octets):
            raise MailLabError("listener octets must be in 2..254")
        known = set(names)
        for domain in self.domains:
            if not domain.mx or any(name not in known for name in domain.mx):
                raise MailLabError(f"{domain.name}: unknown MX listener in {domain.mx}")
        if len({d.name for d in self.domains}) != len(self.domains):
            raise MailLabError("domain names must be unique")
        if self.sasl_users and not self.tls:
            raise MailLabError("sasl_users needs tls (AUTH is offered only after STARTTLS)")
        self.prefix = ""  # "127.X.Y", chosen at start
        self.dir: Path | None = None
        self.postgrey_port = 0
        self._postgrey: subprocess.Popen[bytes] | None = None
        self._postfix_up = False
        self._sources = 0

    # --- addresses and DNS data ------------------------------------------------------------------

    def ip(self, listener: str) -> str:
        """The address of a listener (valid once started)."""
        if not self.prefix:
            raise MailLabError("lab not started")
        return f"{self.prefix}.{self._listener(listener).octet}"

    def _listener(self, name: str) -> Listener:
        for lst in self.listeners:
            if lst.name == name:
                return lst
        raise MailLabError(f"no listener {name!r}")

    def domain(self, name: str) -> MailDomain:
        """The domain called ``name``."""
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise MailLabError(f"no domain {name!r}")

    def mx(self, domain: str) -> list[tuple[str, str]]:
        """``[(mx_host, ip), ...]`` of a domain in preference order."""
        return [(self._listener(n).mx_host, self.ip(n)) for n in self.domain(domain).mx]

    def dns_zones(self) -> dict[str, list[Record]]:
        """Zones for the DNS lab (``{zone: [(owner, type, rdata)]}``): MX or A per domain, A per MX."""
        zones: dict[str, list[Record]] = {d.name: [] for d in self.domains}
        for domain in self.domains:
            if domain.dns != "mx":
                zones[domain.name].append(("@", "A", self.ip(domain.mx[0])))
                if domain.dns == "null_mx":
                    zones[domain.name].append(("@", "MX", "0 ."))
                continue
            for pref, name in enumerate(domain.mx, start=1):
                mx_host = self._listener(name).mx_host
                zones[domain.name].append(("@", "MX", f"{pref * 10} {mx_host}."))
        for lst in self.listeners:
            owner_zone = self._zone_for(lst.mx_host, zones)
            zones.setdefault(owner_zone, []).append((f"{lst.mx_host}.", "A", self.ip(lst.name)))
        return zones

    @staticmethod
    def _zone_for(host: str, zones: dict[str, list[Record]]) -> str:
        labels = host.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in zones:
                return candidate
        return ".".join(labels[1:])

    def fresh_source(self) -> str:
        """A client source address in a /24 no earlier call returned (postgrey keys on the /24)."""
        if not self.prefix:
            raise MailLabError("lab not started")
        self._sources += 1
        second, third = divmod(self._sources, 250)
        lab_second = int(self.prefix.split(".")[1])
        return f"127.{200 + (lab_second + second) % 50}.{third + 1}.{random.randint(2, 254)}"

    @property
    def submission(self) -> tuple[str, int]:
        """``(address, port)`` of the SASL submission listener (labs started with sasl_users)."""
        if not self.prefix:
            raise MailLabError("lab not started")
        if not self.sasl_users:
            raise MailLabError("no submission listener: start the lab with sasl_users")
        return f"{self.prefix}.{SUBMISSION_OCTET}", SUBMISSION_PORT

    @property
    def cert_path(self) -> Path:
        """The self-signed certificate every listener presents for STARTTLS."""
        return self._path("tls/cert.pem")

    @property
    def log_path(self) -> Path:
        """Postfix's log (maillog_file)."""
        return self._path("log/postfix.log")

    def _path(self, rel: str) -> Path:
        if self.dir is None:
            raise MailLabError("lab not started")
        return self.dir / rel

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MailLab:
        """Write the configuration, start postgrey and Postfix; clean up on any failure."""
        for binary in (self.postfix, self.postmap, self.postgrey):
            if not Path(binary).exists():
                raise MailLabError(f"{binary} missing: install postfix and postgrey")
        if self.sasl_users and not Path(self.saslpasswd2).exists():
            raise MailLabError(f"{self.saslpasswd2} missing: install sasl2-bin libsasl2-modules")
        self.dir = Path(tempfile.mkdtemp(prefix="maillab-", dir=self.workdir))
        self.dir.chmod(0o755)
        _running.add(self)
        try:
            self.prefix = self._pick_prefix()
            if self.tls:
                self._make_cert()
            if any(d.greylist for d in self.domains):
                self._start_postgrey()
            if self.sasl_users:
                self._make_sasldb()
            self._write_postfix_config()
            self._start_postfix()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Postfix and postgrey and delete the lab directory (idempotent)."""
        if self._postfix_up and self.dir is not None:
            self._stop_postfix()
        if self._postgrey is not None:
            proc, self._postgrey = self._postgrey, None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.prefix = ""
        _running.discard(self)

    def _pick_prefix(self) -> str:
        live = [lst for lst in self.listeners if lst.profile != "dead"]
        for _ in range(40):
            prefix = f"127.{random.randint(64, 190)}.{random.randint(0, 255)}"
            ports = [(f"{prefix}.{lst.octet}", 25) for lst in live]
            if self.sasl_users:
                ports.append((f"{prefix}.{SUBMISSION_OCTET}", SUBMISSION_PORT))
            if all(_port_free(host, port) for host, port in ports):
                return prefix
        raise MailLabError("no free 127.x.y.0/24 block for the MX listeners")

    def _run(self, *args: str, timeout: float = 30) -> str:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise MailLabError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def _make_cert(self) -> None:
        tls = self._path("tls")
        tls.mkdir()
        names = sorted({lst.mx_host for lst in self.listeners})
        san = ",".join(f"DNS:{n}" for n in names[:200]) or "DNS:mail-lab.test"
        self._run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=mail-lab.test",
            "-addext", f"subjectAltName={san}",
            "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"),
        )  # fmt: skip

    def _make_sasldb(self) -> None:
        """sasl/smtpd.conf (auxprop over a sasldb file) and that file with ``sasl_users``."""
        # Debian's Postfix reads <config_directory>/sasl/smtpd.conf whatever
        # cyrus_sasl_config_path says, so the file lives there (and the path points there too).
        sasl = self._path("etc/sasl")
        sasl.mkdir(parents=True)
        self._path("sasldb").mkdir()
        db = self._path("sasldb/sasldb2")  # outside etc: postfix wants root to own all there
        (sasl / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
            f"sasldb_path: {db}\nmech_list: PLAIN LOGIN\n"
        )
        for user, password in self.sasl_users.items():
            proc = subprocess.run(
                [self.saslpasswd2, "-p", "-c", "-f", str(db), "-u", SASL_REALM, user],
                input=password,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if proc.returncode != 0:
                raise MailLabError(f"saslpasswd2 failed ({proc.returncode}):\n{proc.stderr}")
        shutil.chown(db, "postfix", "postfix")
        db.chmod(0o600)

    def _start_postgrey(self) -> None:
        db = self._path("postgrey")
        db.mkdir()
        shutil.chown(db, "postgrey", "postgrey")
        self.postgrey_port = _free_port("127.0.0.1")
        log = self._path("log")
        log.mkdir(exist_ok=True)
        with (log / "postgrey.log").open("wb") as out:
            self._postgrey = subprocess.Popen(
                [
                    self.postgrey,
                    f"--inet=127.0.0.1:{self.postgrey_port}",
                    f"--delay={self.greylist_delay}",
                    *([f"--greylist-text={self.greylist_text}"] if self.greylist_text else []),
                    "--auto-whitelist-clients=0",
                    f"--dbdir={db}",
                    "--hostname=mail-lab.test",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while True:
            if self._postgrey.poll() is not None:
                raise MailLabError(f"postgrey exited:\n{self._tail('log/postgrey.log')}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.postgrey_port), timeout=0.2).close()
                return
            if time.monotonic() > deadline:
                raise MailLabError(f"postgrey not listening:\n{self._tail('log/postgrey.log')}")
            time.sleep(0.05)

    def _tail(self, rel: str) -> str:
        path = self._path(rel)
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _write_postfix_config(self) -> None:
        etc = self._path("etc")
        for sub in ("etc", "spool", "data", "mail", "log"):
            self._path(sub).mkdir(exist_ok=True)
        shutil.chown(self._path("data"), "postfix", "postfix")
        shutil.chown(self._path("mail"), "nobody", "nogroup")
        vdomains = "".join(f"{d.name} ok\n" for d in self.domains)
        vmailbox = "".join(
            f"@{d.name} {d.name}/catchall/\n"
            if d.catch_all
            else "".join(f"{u}@{d.name} {d.name}/{u}/\n" for u in d.users)
            for d in self.domains
        )
        policy = "".join(f"{d.name} lab_greylist\n" for d in self.domains if d.greylist)
        (etc / "vdomains").write_text(vdomains)
        (etc / "vmailbox").write_text(vmailbox)
        (etc / "rcpt_policy").write_text(policy)
        (etc / "main.cf").write_text(self._main_cf())
        (etc / "master.cf").write_text(self._master_cf())
        # Postfix waits (5 x 300 ms per command) for a main.cf modified "just now" to settle.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(etc / name, (past, past))
        for table in ("vdomains", "vmailbox", "rcpt_policy"):
            self._run(self.postmap, "-c", str(etc), f"hash:{etc / table}")

    def _main_cf(self) -> str:
        d = self.dir
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {d}/spool",
            f"data_directory = {d}/data",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = mx.mail-lab.test",
            "mydomain = mail-lab.test",
            "myorigin = $myhostname",
            "mydestination =",
            "relayhost =",
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "mynetworks = 127.255.255.254/32",
            "smtpd_client_event_limit_exceptions =",
            "smtpd_peername_lookup = no",
            "smtp_dns_support_level = disabled",
            "alias_maps =",
            "alias_database =",
            "biff = no",
            "local_transport = error:5.1.1 local delivery disabled in lab",
            "default_transport = error:5.7.1 outbound delivery disabled in lab",
            "relay_transport = error:5.7.1 outbound delivery disabled in lab",
            f"virtual_mailbox_domains = hash:{d}/etc/vdomains",
            f"virtual_mailbox_maps = hash:{d}/etc/vmailbox",
            f"virtual_mailbox_base = {d}/mail",
            "virtual_uid_maps = static:65534",
            "virtual_gid_maps = static:65534",
            "smtpd_relay_restrictions = reject_unauth_destination",
            "smtpd_recipient_restrictions = reject_unlisted_recipient,"
            f" check_recipient_access hash:{d}/etc/rcpt_policy",
            "smtpd_restriction_classes = lab_greylist",
            f"lab_greylist = check_policy_service inet:127.0.0.1:{self.postgrey_port or 9}",
            "disable_vrfy_command = yes",
            f"in_flow_delay = {self.in_flow_delay}",
            f"maillog_file = {d}/log/postfix.log",
            f"maillog_file_prefixes = {d}",
        ]
        if self.tls:
            lines += [
                "smtpd_tls_security_level = may",
                f"smtpd_tls_cert_file = {d}/tls/cert.pem",
                f"smtpd_tls_key_file = {d}/tls/key.pem",
            ]
        if self.sasl_users:  # read by every smtpd at start; only the submission one uses it
            lines.append(f"cyrus_sasl_config_path = {d}/etc/sasl")
        return "\n".join(lines) + "\n"

    def _master_cf(self) -> str:
        services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "cleanup_noflow unix n - n - 0 cleanup -o in_flow_delay=0",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        s = self.strict
        for lst in self.listeners:
            if lst.profile == "dead":
                continue
            opts = [f"myhostname={lst.mx_host}", f"syslog_name=postfix/{lst.name}"]
            if lst.profile == "strict":
                opts += [
                    f"smtpd_recipient_limit={s.recipient_limit}",
                    f"smtpd_soft_error_limit={s.soft_error_limit}",
                    f"smtpd_hard_error_limit={s.hard_error_limit}",
                    "smtpd_error_sleep_time=0",
                    f"smtpd_client_connection_count_limit={s.connection_count_limit}",
                    f"smtpd_client_connection_rate_limit={s.connection_rate_limit}",
                ]
            if lst.profile == "bench":
                opts.append("cleanup_service_name=cleanup_noflow")
            if lst.profile == "tarpit":
                opts += [
                    "smtpd_delay_reject=no",
                    f"smtpd_client_restrictions=sleep,{self.tarpit_seconds},permit",
                ]
            head = f"{self.prefix}.{lst.octet}:25 inet n - n - - smtpd"
            services.append(head + "".join(f"\n  -o {o}" for o in opts))
        if self.sasl_users:
            opts = [
                "myhostname=submission.mail-lab.test",
                "syslog_name=postfix/submission",
                "cleanup_service_name=cleanup_noflow",
                "smtpd_tls_security_level=may",
                "smtpd_tls_auth_only=yes",
                "smtpd_sasl_auth_enable=yes",
                "smtpd_sasl_type=cyrus",
                "smtpd_sasl_path=smtpd",
                f"smtpd_sasl_local_domain={SASL_REALM}",
                "smtpd_sasl_security_options=noanonymous",
                "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            ]
            head = f"{self.prefix}.{SUBMISSION_OCTET}:{SUBMISSION_PORT} inet n - n - - smtpd"
            services.append(head + "".join(f"\n  -o {o}" for o in opts))
        return "\n".join(services) + "\n"

    def _start_postfix(self) -> None:
        etc = str(self._path("etc"))
        self._postfix_up = True
        self._run(self.postfix, "-c", etc, "start")
        deadline = time.monotonic() + 15
        for host, port, tarpit in self._endpoints():
            while True:
                try:
                    with socket.create_connection((host, port), timeout=1) as sock:
                        if tarpit:
                            break  # its greeting is late on purpose
                        sock.settimeout(5)
                        banner = sock.recv(512)
                        sock.sendall(b"QUIT\r\n")
                    if banner.startswith(b"220"):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise MailLabError(f"Postfix not answering:\n{self._tail('log/postfix.log')}")
                time.sleep(0.05)

    def _endpoints(self) -> list[tuple[str, int, bool]]:
        """``(address, port, tarpit)`` of every smtpd listener that answers."""
        live = [lst for lst in self.listeners if lst.profile != "dead"]
        ends = [(self.ip(lst.name), 25, lst.profile == "tarpit") for lst in live]
        if self.sasl_users:
            ends.append((*self.submission, False))
        return ends

    def _master_pid(self) -> int | None:
        pid_file = self._path("spool/pid/master.pid")
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().split()[0])
        return None

    def _stop_postfix(self) -> None:
        pid = self._master_pid()
        with contextlib.suppress(MailLabError, subprocess.TimeoutExpired):
            self._run(self.postfix, "-c", str(self._path("etc")), "stop", timeout=15)
        # The master lingers ~1.5 s reaping its children; the lab's state is disposable, so
        # once the graceful stop had a moment, the whole process group is killed.
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline and self._any_listener_open():
            time.sleep(0.02)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._any_listener_open():
            time.sleep(0.02)
        self._postfix_up = False

    def _any_listener_open(self) -> bool:
        for host, port, _ in self._endpoints():
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                continue
            return True
        return False


def bench_domains(
    count: int = 200, users_per_domain: int = 5, mx_listeners: Sequence[str] = ("bench1",)
) -> list[MailDomain]:
    """``count`` domains bench0001.test... spread round-robin over ``mx_listeners``."""
    users = tuple(f"user{i:02d}" for i in range(users_per_domain))
    return [
        MailDomain(f"bench{i:04d}.test", mx=(mx_listeners[i % len(mx_listeners)],), users=users)
        for i in range(1, count + 1)
    ]


def default_listeners(bench: int = 0) -> list[Listener]:
    """The suite's MX hosts: main, catch-all, greylist, strict, a dead one, and ``bench`` bench MXes."""
    listeners = [
        Listener("main", "mx.company.test", 2),
        Listener("catchall", "mx.catchall.test", 3),
        Listener("greylist", "mx.greylist.test", 4),
        Listener("strict", "mx.strict.test", 10, profile="strict"),
        Listener("dead", "mx.deadmx.test", 9, profile="dead"),
        Listener("slow", "mx.slow.test", 5, profile="tarpit"),
    ]
    listeners += [
        Listener(f"bench{k}", f"mx{k}.bench-mx.test", 100 + k, "bench") for k in range(1, bench + 1)
    ]
    return listeners


def default_domains(extra: Iterable[MailDomain] = ()) -> list[MailDomain]:
    """company, catchall, greylist, strict, deadmx, multi, slow, nomx and nullmx (all .test)."""
    return [
        MailDomain("company.test", mx=("main",)),
        MailDomain("catchall.test", mx=("catchall",), catch_all=True),
        MailDomain("greylist.test", mx=("greylist",), greylist=True),
        MailDomain("strict.test", mx=("strict",)),
        MailDomain("deadmx.test", mx=("dead",)),
        MailDomain("multi.test", mx=("dead", "main")),
        MailDomain("slow.test", mx=("slow",)),
        MailDomain("nomx.test", mx=("main",), dns="a_only"),
        MailDomain("nullmx.test", mx=("main",), dns="null_mx"),
        *extra,
    ]


def default_mail_lab(bench_mx: int = 0, bench_count: int = 0) -> MailLab:
    """A (not started) lab with the default domains plus ``bench_count`` bench domains."""
    names = [f"bench{k}" for k in range(1, bench_mx + 1)]
    extra = bench_domains(bench_count, mx_listeners=names) if bench_mx and bench_count else []
    return MailLab(listeners=default_listeners(bench_mx), domains=default_domains(extra))
