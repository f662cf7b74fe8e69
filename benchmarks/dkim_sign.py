"""DKIM signing benchmark: messages signed per second by dkimpy's ``dkim.sign`` as shipped (pure-
Python RSA), by dkimpy with its RSA step handed to OpenSSL (what the builder did before its own
signer), and by ``server.mail.dkim_signing``; plus whole messages built and signed per second.
Printed side by side as ratios to plain dkimpy. CPU only, one process, no I/O.

Run: ``.venv/bin/python -m benchmarks.dkim_sign [--messages 200 --seconds 1 --rounds 3]``: each
path's best of interleaved rounds, in CPU time of the process. Every path signs the same messages
(rsa-sha256, relaxed/relaxed, the builder's signed headers, a 2048-bit key); one signature of
each is checked with ``dkim.verify`` before anything is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from benchmarks._rate import Rate
from server.mail import dkim_signing
from server.mail.dns_records import generate_dkim_key
from server.mail.message import SIGNED_HEADERS, Draft, Sender, build_message

SELECTOR = "bench"
DOMAIN = "acme.test"
HOOKED = "dkimpy + OpenSSL RSA hook"
_HOOK_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # the hook's keys, loaded once as it did


def make_key() -> tuple[bytes, bytes]:
    """(private key PEM, the DKIM TXT record) of a fresh RSA 2048 key, made as the product makes
    a domain's key."""
    pem, public = generate_dkim_key()
    return pem, f"v=DKIM1; k=rsa; p={public}".encode()


def drafts(count: int) -> list[Draft]:
    """``count`` campaign-like messages: a personalised subject, text and HTML parts."""
    return [
        Draft(
            from_="Ann <ann@acme.test>",
            to=[f"lead{i}@company{i % 97}.test"],
            subject=f"Quick question about Company {i}, Lead {i}",
            text=f"Hi Lead {i},\n\n" + "A line of the campaign's text body.  \n" * 12,
            html=f"<p>Hi Lead {i},</p>" + "<p>A paragraph of the HTML part.</p>\n" * 12,
            list_unsubscribe=f"https://acme.test/u/{i:08d}",
        )
        for i in range(count)
    ]


def unsigned(built: bytes) -> bytes:
    """``built`` without its leading DKIM-Signature field."""
    lines = built.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def present(message: bytes) -> list[bytes]:
    """The builder's signed headers this message has (what it passed dkimpy)."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    names = {line.split(b":", 1)[0].lower() for line in head if line[:1] not in (b" ", b"\t")}
    return [h for h in SIGNED_HEADERS if h in names]


def dkimpy_sign(message: bytes, pem: bytes) -> bytes:
    """dkimpy's ``dkim.sign`` as the builder called it."""
    return bytes(
        dkim.sign(
            message,
            SELECTOR.encode(),
            DOMAIN.encode(),
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=present(message),
        )
    )


def own_sign(message: bytes, pem: bytes) -> bytes:
    """``server.mail.dkim_signing.sign_message`` as the builder calls it."""
    return dkim_signing.sign_message(
        message, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem, headers=SIGNED_HEADERS
    )


@contextlib.contextmanager
def openssl_rsa_in_dkimpy() -> Iterator[None]:
    """dkimpy with its RSASSA-PKCS1-v1_5 step done by ``cryptography`` (the builder's former
    module-level hook: dkimpy still parses the PEM in Python on every call)."""
    original = dkim.RSASSA_PKCS1_v1_5_sign
    keys = _HOOK_KEYS

    def openssl_sign(digest: Any, key: dict[str, int]) -> bytes:
        private = keys.get(key["modulus"])
        if private is None:
            public = rsa.RSAPublicNumbers(key["publicExponent"], key["modulus"])
            private = rsa.RSAPrivateNumbers(
                key["prime1"],
                key["prime2"],
                key["privateExponent"],
                key["exponent1"],
                key["exponent2"],
                key["coefficient"],
                public,
            ).private_key()
            keys[key["modulus"]] = private
        return private.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    dkim.RSASSA_PKCS1_v1_5_sign = openssl_sign
    try:
        yield
    finally:
        dkim.RSASSA_PKCS1_v1_5_sign = original


def timed(name: str, step: Callable[[int], object], count: int, seconds: float) -> Rate:
    """Call ``step(i)`` over ``i`` in ``0..count-1`` again and again for at least ``seconds`` of
    the process's CPU time (what the VM's other tenants do not change)."""
    done, start = 0, time.process_time()
    while True:
        for i in range(count):
            step(i)
        done += count
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return Rate(name, done, elapsed)


def run(count: int, seconds: float, rounds: int) -> list[Rate]:
    """Each path's best of ``rounds`` interleaved rounds over ``count`` messages, after
    checking that each path's signature verifies."""
    pem, record = make_key()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name.startswith(f"{SELECTOR}._domainkey.{DOMAIN}".encode()) else b""

    sender = Sender(DOMAIN, SELECTOR, pem)
    mails = drafts(count)
    messages = [unsigned(build_message(d, sender, f"email_{i:06d}").raw) for i, d in enumerate(mails)]  # fmt: skip
    with openssl_rsa_in_dkimpy():
        assert dkim.verify(dkimpy_sign(messages[0], pem) + messages[0], dnsfunc=dns)
    assert dkim.verify(dkimpy_sign(messages[0], pem) + messages[0], dnsfunc=dns)
    assert dkim.verify(own_sign(messages[0], pem), dnsfunc=dns)

    paths: list[tuple[str, Callable[[int], object]]] = [
        ("dkimpy dkim.sign", lambda i: dkimpy_sign(messages[i], pem)),
        (HOOKED, lambda i: dkimpy_sign(messages[i], pem)),
        ("dkim_signing.sign_message", lambda i: own_sign(messages[i], pem)),
        ("build_message (+ sign)", lambda i: build_message(mails[i], sender, f"e{i:06d}")),
    ]
    best: dict[str, Rate] = {}
    for _ in range(rounds):
        for name, step in paths:
            with openssl_rsa_in_dkimpy() if name == HOOKED else contextlib.nullcontext():
                result = timed(name, step, count, seconds)
            if name not in best or result.per_second > best[name].per_second:
                best[name] = result
    return [best[name] for name, _ in paths]


def format_table(results: Sequence[Rate]) -> str:
    """Signatures/s of each path and its ratio to plain dkimpy."""
    base = results[0].per_second
    lines = [f"{'path':<28} {'messages':>9} {'cpu s':>8} {'msg/s':>9} {'vs dkimpy':>10}"]
    for r in results:
        ratio = r.per_second / base if base else float("nan")
        lines.append(
            f"{r.name:<28} {r.messages:>9} {r.seconds:>8.2f} {r.per_second:>9.1f} {ratio:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200, help="distinct messages signed")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per path, round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    args = parser.parse_args(argv)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min); CPU time of this process")
    print(format_table(run(args.messages, args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
