"""emailintel's outcomes as error envelopes: the request's fault (400) or an upstream's (5xx).

Every error here is an envelope the payment gate never settles. Messages for upstream failures
are fixed text with a stable code; what the upstream said (which may quote a provider URL with
its key, or its own error page) goes to the server log, URLs redacted.
"""

from __future__ import annotations

import logging

from emailintel.errors import (
    AddressError,
    ConfigError,
    DnsError,
    EmailIntelError,
    PersonNameError,
    ProfileUrlError,
    SearchQueryError,
    SearchRateLimited,
    SearchUnavailable,
)
from emailintel.models import DnsFacts, SmtpFacts
from server.errors import ApiError, InvalidRequest
from server.redact import redact

__all__ = ["UpstreamError", "check_dns", "check_smtp", "library_error"]

log = logging.getLogger("server.upstream")

_INPUT_ERRORS = (AddressError, PersonNameError, SearchQueryError, ProfileUrlError)
"""emailintel errors about the request's own content; their messages quote only that content."""


class UpstreamError(ApiError):
    """A dependency (DNS, SMTP, search backend) failed; the request was not answered or charged."""

    status = 503
    type = "api_error"


def _smtp_error(exc: EmailIntelError) -> UpstreamError | None:
    from emailintel.smtp.session import SmtpSessionError, SmtpTimeoutError

    if isinstance(exc, SmtpTimeoutError):
        return UpstreamError("smtp_timeout", "The mail server timed out; not charged.", status=504)
    if isinstance(exc, SmtpSessionError):  # SmtpProxyError included
        return UpstreamError("smtp_unavailable", "The mail server was unreachable; not charged.")
    return None


def library_error(exc: EmailIntelError, *, param: str | None = None) -> ApiError:
    """The envelope for an emailintel error: 400 for the request's content, else 502-504.

    ``param`` names the request field the input errors are about.
    """
    if isinstance(exc, _INPUT_ERRORS):
        return InvalidRequest("parameter_invalid", f"Cannot use {param}: {exc}.", param=param)
    log.warning("emailintel %s: %s", type(exc).__name__, redact(str(exc)))
    if isinstance(exc, ConfigError):
        return UpstreamError(
            "not_configured", "The server is not configured for this route; not charged."
        )
    if isinstance(exc, SearchRateLimited):
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return UpstreamError(
            "search_rate_limited",
            "The search backend is rate-limiting; retry later, not charged.",
            headers=headers,
        )
    if isinstance(exc, SearchUnavailable):
        return UpstreamError(
            "search_unavailable", "The search backend failed; not charged.", status=502
        )
    if isinstance(exc, DnsError):
        return UpstreamError("dns_unavailable", "A DNS lookup failed; not charged.")
    return _smtp_error(exc) or UpstreamError(
        "upstream_unavailable", "A dependency failed; not charged."
    )


def check_dns(dns: DnsFacts | None) -> None:
    """Raise ``dns_unavailable`` when the lookup timed out or failed (no answer to give)."""
    if dns is not None and dns.status in ("timeout", "error"):
        log.warning("dns lookup for %s: %s %s", dns.domain, dns.status, redact(dns.error or ""))
        raise UpstreamError("dns_unavailable", f"DNS lookup for {dns.domain} failed; not charged.")


def check_smtp(smtp: SmtpFacts | None) -> None:
    """Raise ``smtp_timeout`` (504) or ``smtp_unavailable`` when the probe got no answer."""
    if smtp is None:
        return
    if smtp.timed_out:
        raise UpstreamError("smtp_timeout", "The mail server timed out; not charged.", status=504)
    if smtp.connect_failed or smtp.proxy_error:
        raise UpstreamError("smtp_unavailable", "The mail server was unreachable; not charged.")
