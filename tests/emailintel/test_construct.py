"""The unvalidated constructor used on hot paths builds models equal to validated ones."""

from __future__ import annotations

import pytest

from emailintel._construct import construct
from emailintel.models import Evidence, RiskResult, Verdict
from emailintel.verify import Validator


@pytest.mark.parametrize(
    "address",
    ["jane@acme.io", "info@mailinator.com", "bob@gmial.com", "not an address", "zoë@bücher.de"],
)
def test_offline_results_equal_their_validated_copies(address: str) -> None:
    result = Validator(check_dns=False).validate_offline(address)
    assert set(result.__dict__) == set(RiskResult.model_fields)
    assert RiskResult.model_validate(result.model_dump()) == result


def test_evidence_has_every_field() -> None:
    validator = Validator(check_dns=False)
    from emailintel.address import parse_address

    evidence = validator.offline_evidence(parse_address("jane@acme.io"))
    assert set(evidence.__dict__) == set(Evidence.model_fields)
    assert Evidence.model_validate(evidence.model_dump()) == evidence


def test_construct_is_frozen_like_a_validated_model() -> None:
    result = construct(
        RiskResult,
        **{
            **dict.fromkeys(RiskResult.model_fields),
            "address": "a@b.c",
            "verdict": Verdict.UNKNOWN,
            "score": 50,
            "reasons": (),
        },
    )
    with pytest.raises(ValueError, match="frozen"):
        result.score = 1  # type: ignore[misc]
