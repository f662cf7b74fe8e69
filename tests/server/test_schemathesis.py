"""Property tests from the OpenAPI document (schemathesis), on an app without payments: every
built-in check (no 5xx, responses as documented, schema-valid bodies accepted, schema-invalid ones
rejected, ...) on positive and negative cases, and `schemathesis run --checks all` itself, whose
coverage phase walks the schema's boundaries. With payments every paid route answers 402.

Random (fuzzed) cases are drawn once, in-process, where the checks know which 400s are semantic;
the command line runs the deterministic phases (examples and coverage) that nothing else runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from keyed_helpers import JWT_SECRET
from lab.dnslab import DnsLab
from lab.searchlab import SearchLab
from lab.webserver import UvicornThread
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from emailintel.dns import DnsResolver
from emailintel.search import Backoff, engine_from_env
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from server.app import create_app
from server.auth.sessions import issue_session_jwt
from server.cli import main
from server.http.idempotency_rules import valid_key
from server.payments import gate_factory
from server.settings import load_settings


@pytest.fixture(scope="module")
def free_server(dns_lab: DnsLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app without payments over uvicorn: lab DNS, lab search, SMTP on a closed port."""
    work = tmp_path_factory.mktemp("schemathesis")
    app_settings = load_settings(
        env_file=None,
        database_url=f"sqlite+aiosqlite:///{work / 'bavlio.sqlite3'}",
        jwt_secret=JWT_SECRET,
        secret_file=work / "bavlio.secret",
        default_plan="paid",
        plans={"paid": {"rate_limit": "1000000/minute"}},  # schemathesis is fast, not abusive
    )
    with SearchLab() as search:
        app = create_app(
            app_settings,
            resolver=DnsResolver([dns_lab.nameserver], timeout=2.0),
            prober=Prober(
                helo="probe.verifier-lab.test",
                mail_from="bounce@verifier-lab.test",
                allow_private_mx=True,
                politeness=PolitenessConfig.unlimited(),
                timeouts=Timeouts(connect=1, banner=2, command=2),
            ),
            search=engine_from_env(search.env("duckduckgo"), backoff=Backoff(retries=1, base=0.0)),
        )
        with UvicornThread(_FreshIdempotencyKeys(app)) as server:
            # the signed-in user exists after its first call; give it credits for every call
            me = httpx.get(server.url + "/api/v1/auth/me", headers={"Authorization": SESSION})
            config = work / "bavlio.toml"
            config.write_text(f'database_url = "sqlite:///{work / "bavlio.sqlite3"}"\n')
            grant = [
                "credits",
                "grant",
                me.json()["user_id"],
                "1000000000",
                "--config",
                str(config),
            ]
            assert main(grant) == 0
            yield server.url


class _FreshIdempotencyKeys:
    """Makes every generated Idempotency-Key unique: schemathesis draws the same key for
    different bodies, which is rightly a 422; replays have their own tests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.count += 1
            scope = dict(scope)
            scope["headers"] = [
                (name, self._fresh(value) if name == b"idempotency-key" else value)
                for name, value in scope["headers"]
            ]
        await self.app(scope, receive, send)

    def _fresh(self, key: bytes) -> bytes:
        if not valid_key(key.decode("latin-1")):
            return key  # invalid keys must stay invalid (negative cases)
        return key[:200] + b"-%d" % self.count


SEMANTIC = frozenset(
    {
        "invalid_email",
        "invalid_domain",
        "csv_column_unknown",
        "too_many_variables",
        "duplicate_variant_label",
    }
)
"""400s for values the schema cannot describe: an address or domain that is not one (IDNA and
label rules), a CSV file's column layout, more variables in a template part than it renders, two
variants of a campaign step with one label."""

SESSION = "Bearer " + issue_session_jwt(JWT_SECRET.encode(), "schemathesis-user")
"""Keyed routes are called as a signed-in (paid plan) user, so their handlers run."""


@pytest.fixture(scope="module")
def api_schema(free_server: str) -> Any:
    """The served OpenAPI document, without readiness (its 503 is the point of it)."""
    schema = schemathesis.openapi.from_url(free_server + "/openapi.json")
    schema.config.update(base_url=free_server, headers={"Authorization": SESSION})
    return schema.exclude(path="/api/v1/ready")


def _has_webhook_url(case: schemathesis.Case) -> bool:
    """A webhook URL in a generated body: whether it may receive (a public https host) is
    decided by the server's destination rule, which no JSON schema can express."""
    return (
        case.path.startswith("/api/v1/webhooks")
        and isinstance(case.body, dict)
        and isinstance(case.body.get("url"), str)
    )


SERVER_STATE_BODIES = frozenset(
    {
        "POST /api/v1/bavimail/emails",
        "POST /api/v1/templates/{template_id}/preview",
        "POST /api/v1/email-verification/dataset/{dataset_id}",
    }
)
"""Operations whose schema-valid bodies are refused for server state the schema cannot say: an
email's From must be on a verified sending domain (422), its addresses real ones (400); a preview
takes an inline row or a stored one, not both; a dataset's email column must exist."""


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_responses_match_the_document(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert "POST /api/x402/v1/email/find" in labels
    assert "POST /api/x402/v1/linkedin/find-url" in labels
    if mode is GenerationMode.NEGATIVE:  # only request bodies can be wrong here
        operations = [op for op in operations if op.method.upper() in {"POST", "PUT", "PATCH"}]
        # a multipart file is any bytes: "wrong types" for it are still a file (the CSV import
        # answers them with per-line errors); its other form fields are checked below
        operations = [op for op in operations if op.label != "POST /api/v1/suppression/import"]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            if case.query and "cursor" in case.query:  # opaque: only a server-made one is valid
                case.query = {k: v for k, v in case.query.items() if k != "cursor"}
            if mode is GenerationMode.POSITIVE and _has_webhook_url(case):
                case.body["url"] = "https://hooks.example.com/in"  # a schema cannot say "public"
            response = case.call(headers={"Authorization": SESSION})
            excluded = []
            semantic = response.status_code == 400 and (
                response.json()["error"]["code"] in SEMANTIC
            )
            # any bytes are a schema-valid file, and most are no CSV or workbook: a precise 400
            server_state = case.operation.label in SERVER_STATE_BODIES
            if semantic or server_state or "/upload/" in case.operation.path:
                excluded.append(positive_data_acceptance)
            if response.status_code == 413:  # the documented body limit rejects it first
                excluded.append(negative_data_rejection)
            case.validate_response(response, excluded_checks=excluded)  # every other check

        check()


def test_schemathesis_run_finds_nothing(free_server: str, tmp_path: Path) -> None:
    """The command line a reviewer runs: all checks, positive and negative data, the schema's
    examples and the coverage phase (boundary values of every constraint), with a fixed seed.
    Its fuzzing phase would draw the same random cases as test_responses_match_the_document."""
    # A list's cursor is opaque: only one the server made is valid, so a generated one is a 400;
    (tmp_path / "schemathesis.toml").write_text(
        "".join(
            f'[[operations]]\ninclude-name = "GET {path}"\n'
            "[operations.checks.positive_data_acceptance]\n"
            'expected-statuses = ["2xx", "400", "401", "403", "404", "429"]\n'
            for path in (
                "/api/v1/credits/transactions",
                "/api/v1/api-keys",
                "/api/v1/templates/",
                "/api/v1/suppression/",
                "/api/v1/sender-profiles/",
                "/api/v1/sender-profiles/search/",
                "/api/v1/bavimail/inbound-emails",
                "/api/v1/bavimail/conversations",
                "/api/v1/bavimail/domains",
                "/api/v1/bavimail/aliases",
                "/api/v1/datasets/list",
                "/api/v1/datasets/{dataset_id}/rows",
                "/api/v1/webhooks",
                "/api/v1/webhooks/{webhook_id}/deliveries",
                "/api/v1/user-extractions/",
                "/api/v1/bavimail/emails",
                "/api/v1/campaigns/",
                "/api/v1/campaigns/{campaign_id}/leads",
                "/api/v1/campaigns/{campaign_id}/playground/drafts",
            )
        )
        # addresses, domains and CSV layouts the schema cannot describe are (rightly) a 400
        # (most generated strings are no address: no "mostly rejected" warning either)
        + '[[operations]]\ninclude-name = "POST /api/v1/suppression/"\nwarnings = false\n'
        "[operations.checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]\n'
        # ... and a multipart file is any bytes: a "wrongly typed" file is still a file to read
         + '[[operations]]\ninclude-name = "POST /api/v1/suppression/import"\n'
        "[operations.checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "429"]\n'
        "[operations.checks.negative_data_rejection]\n"
        'expected-statuses = ["200", "400", "401", "403", "404", "406", "413", "415", "422"]\n'
        # ids are made by the server: generated ones are (rightly) unknown, a 404
         + '[[operations]]\ninclude-path-regex = "[{](job_id|session_id|template_id|entry_id|'
        'profile_id|email_id|conversation_id|webhook_id|domain_id|alias_id|dataset_id|extraction_id|campaign_id|campaign_lead_id)[}]"\nwarnings = false\n'
        # an alias needs a verified domain (DNS published): a generated domain id is a 404
        + '[[operations]]\ninclude-name = "POST /api/v1/bavimail/aliases"\nwarnings = false\n'
        # an uploaded file is any bytes to the schema; most are refused with a precise 400 (so
        # no "mostly rejected" warning either)
        + '[[operations]]\ninclude-path-regex = "/upload/"\nwarnings = false\n'
        "[operations.checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "400", "401", "403", "404", "413", "429"]\n'
        # ... and its form fields are text: a "boolean" or "object" arrives as the text it was
        "[operations.checks.negative_data_rejection]\n"
        'expected-statuses = ["200", "400", "401", "403", "404", "406", "413", "415", "422"]\n'
        # a webhook URL must be a public https host: the server's rule, no schema can say it
        + "".join(
            f'[[operations]]\ninclude-name = "{name}"\nwarnings = false\n'
            "[operations.checks.positive_data_acceptance]\n"
            'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]\n'
            for name in ("POST /api/v1/webhooks", "PATCH /api/v1/webhooks/{webhook_id}")
        )
        # two variants of a campaign step with one label (see SEMANTIC)
        + "".join(
            f'[[operations]]\ninclude-name = "{name}"\nwarnings = false\n'
            "[operations.checks.positive_data_acceptance]\n"
            'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]\n'
            "[operations.checks.negative_data_rejection]\n"
            'expected-statuses = ["400", "401", "403", "404", "406", "413", "422"]\n'
            for name in ("POST /api/v1/campaigns/", "PATCH /api/v1/campaigns/{campaign_id}")
        )
        # 10,001 long addresses exceed the 1 MiB body limit first: a documented 413 rejects them
        # (so do over-long escaped template parts and preview rows)
        + "".join(
            f'[[operations]]\ninclude-name = "{name}"\n'
            "[operations.checks.negative_data_rejection]\n"
            'expected-statuses = ["400", "401", "403", "404", "406", "413", "422"]\n'
            for name in (
                "POST /api/v1/templates/",
                "PATCH /api/v1/templates/{template_id}",
                "POST /api/v1/templates/{template_id}/preview",
            )
        )
        + '[[operations]]\ninclude-name = "POST /api/v1/email-verification/bulk"\n'
        "[operations.checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "406", "413", "422"]\n'
        # server state no schema can say (see SERVER_STATE_BODIES): 400/422
        + "".join(
            f'[[operations]]\ninclude-name = "{name}"\nwarnings = false\n'
            "[operations.checks.positive_data_acceptance]\n"
            'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429"]\n'
            for name in sorted(SERVER_STATE_BODIES)
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "--no-color",
            "run",
            free_server + "/openapi.json",
            "--checks=all",
            "--mode=all",
            "--phases=examples,coverage",  # fuzzing: see the test above
            "--exclude-path=/api/v1/ready",
            f"--header=Authorization: {SESSION}",
            "--max-examples=15",
            "--seed=1",
            "--workers=1",
            "--request-timeout=60",  # a job-starting call can take seconds on a loaded machine
        ],
        cwd=tmp_path,  # its reports and caches
        capture_output=True,
        text=True,
        timeout=1800,  # every operation through every phase: many minutes under load
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-6000:]


def test_every_paid_route_answers_402_without_payment(
    anvil: Any, tmp_path: Path, dns_lab: DnsLab
) -> None:
    token = "0x" + "11" * 20  # never reached: no payment is ever verified here
    paid_settings = load_settings(
        env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bavlio.sqlite3'}",
        rpc_url=anvil.url,
        network="eip155:31337",
        asset=token,
        pay_to="0x" + "22" * 20,
        settler_key="0x" + "33" * 32,
        jwt_secret=JWT_SECRET,
        secret_file=tmp_path / "bavlio.secret",
    )
    session = {"Authorization": f"Bearer {issue_session_jwt(JWT_SECRET.encode(), 'buyer')}"}
    app = create_app(
        paid_settings,
        payment_middleware=gate_factory(paid_settings),
        resolver=DnsResolver([dns_lab.nameserver], timeout=2.0),
    )
    with UvicornThread(app) as server:
        document = httpx.get(server.url + "/openapi.json").json()
        paid = [
            (path, method, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if "x-x402" in op
        ]
        assert len(paid) == 6  # the five under /api/x402/v1 and buying credits
        schemas = document["components"]["schemas"]
        assert {"FindRequest", "FindResponse", "LinkedInRequest", "LinkedInResponse"} <= set(
            schemas
        )
        assert len(schemas["FindRequest"]["oneOf"]) == 2
        for path, method, op in paid:
            if "security" in op:  # keyed and paid: credentials come before any payment
                anonymous = httpx.request(method, server.url + path, json={})
                assert anonymous.status_code == 401, path
            response = httpx.request(method, server.url + path, json={}, headers=session)
            assert response.status_code == 402, path
            required = json.loads(base64.b64decode(response.headers["payment-required"]))
            [offer] = required["accepts"]
            assert offer["amount"] == op["x-x402"]["amount"]
            assert offer["payTo"] == op["x-x402"]["payTo"]
            assert offer["asset"] == op["x-x402"]["asset"]
            assert response.json()["accepts"][0]["maxAmountRequired"] == op["x-x402"]["amount"]
            assert "PAYMENT-REQUIRED" in op["responses"]["402"]["headers"]
            assert "PAYMENT-RESPONSE" in op["responses"]["200"]["headers"]
