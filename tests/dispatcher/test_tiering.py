"""Tiering: every default rule, the reasons it records, and a bad policy refused at load."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.dispatcher.policy.service import DEFAULT_POLICY_PATH, GradeInput, PolicyError, load_policy

POLICY = load_policy(None)


def grade(**overrides: object) -> tuple[str, list[str]]:
    g = dict(fraud_type="fake_investment", signal="fraud_sms_received", amount_at_risk=None, risk_score=None,
             age=None, region_code="330106", case_warnings=1)
    g.update(overrides)
    tier, reasons = POLICY.grade(GradeInput(**g))  # type: ignore[arg-type]
    return tier, [r.rule for r in reasons]


@pytest.mark.parametrize("signal", ["transfer_in_progress", "transfer_to_flagged_account", "remote_control_app",
                                    "screen_sharing"])
def test_high_signals(signal: str) -> None:
    """A transfer in progress, a flagged account, remote control or screen sharing is high on its own."""
    assert grade(signal=signal) == ("high", ["signal"])


@pytest.mark.parametrize("signal", ["fraud_call_received", "fraud_app_installed", "fraud_site_visited"])
def test_medium_signals(signal: str) -> None:
    """Recent contact with a known fraud number, app or site is medium."""
    assert grade(signal=signal) == ("medium", ["signal"])


@pytest.mark.parametrize("signal", ["fraud_sms_received", "other"])
def test_low_signals(signal: str) -> None:
    """Mere exposure is low."""
    assert grade(signal=signal) == ("low", ["signal"])


def test_impersonating_police_is_high() -> None:
    """冒充公检法 is high whatever the signal."""
    assert grade(fraud_type="impersonating_police") == ("high", ["signal", "impersonating_police"])


def test_amount_of_50000_or_more_is_high_and_just_below_is_not() -> None:
    """The 50,000 CNY line: at it, high; a fen below, the signal decides."""
    assert grade(amount_at_risk=Decimal("50000")) == ("high", ["signal", "large_amount"])
    assert grade(amount_at_risk=Decimal("49999.99")) == ("low", ["signal"])


def test_upstream_risk_score_lifts_to_medium() -> None:
    """A sender's risk score of 80+ lifts a low warning to medium."""
    assert grade(risk_score=80) == ("medium", ["signal", "upstream_risk_score"])
    assert grade(risk_score=79) == ("low", ["signal"])


@pytest.mark.parametrize(("age", "expected"), [(65, "medium"), (64, "low"), (17, "medium"), (18, "low")])
def test_elderly_and_minors_go_up_one_tier(age: int, expected: str) -> None:
    """People aged 65+ or under 18 go up one tier; 64 and 18 do not."""
    assert grade(age=age)[0] == expected


def test_age_raise_stops_at_high() -> None:
    """A raise never goes past high."""
    assert grade(signal="remote_control_app", age=70) == ("high", ["signal", "vulnerable_age"])


def test_third_warning_in_a_case_goes_up_one_tier() -> None:
    """Repeat warnings: the third in one open case goes up one tier."""
    assert grade(case_warnings=2)[0] == "low"
    assert grade(case_warnings=3) == ("medium", ["signal", "repeat_warnings"])


def test_reasons_explain_each_rule() -> None:
    """Every reason says which rule fired, what it did, and why."""
    _, reasons = POLICY.grade(GradeInput(fraud_type="impersonating_police", signal="fraud_call_received",
                                         amount_at_risk=None, risk_score=None, age=80, region_code="330106",
                                         case_warnings=1))
    assert [r.as_dict() for r in reasons] == [
        {"rule": "signal", "effect": "medium", "why": "signal fraud_call_received suggests medium"},
        {"rule": "impersonating_police", "effect": "at least high",
         "why": "冒充公检法 (impersonating police, prosecutors or courts) is high risk"},
        {"rule": "vulnerable_age", "effect": "raise 1",
         "why": "people aged 65 or over, or under 18, go up one tier"},
    ]


def test_default_playbook_deadlines_are_2h_24h_72h() -> None:
    """The built-in playbooks give the tiered deadlines of the domain rule."""
    assert {t: POLICY.playbook(t).deadline_minutes for t in ("high", "medium", "low")} == {
        "high": 120, "medium": 1440, "low": 4320}


def test_a_policy_with_an_unknown_condition_is_refused(tmp_path: Path) -> None:
    """A typo in a policy file stops the load with a message naming it, instead of silently never firing."""
    bad = tmp_path / "policy.yaml"
    bad.write_text(DEFAULT_POLICY_PATH.read_text().replace("amount_at_risk_gte", "amount_gte"))
    with pytest.raises(PolicyError, match="amount_gte"):
        load_policy(bad)


def test_a_visit_claim_time_of_zero_is_refused_by_name(tmp_path: Path) -> None:
    """A claim time of 0 would escalate every visit the moment it is made: the load stops, naming the field."""
    bad = tmp_path / "policy.yaml"
    bad.write_text(DEFAULT_POLICY_PATH.read_text().replace("visit_claim_within_minutes: 15", "visit_claim_within_minutes: 0"))
    with pytest.raises(PolicyError, match="visit_claim_within_minutes"):
        load_policy(bad)
    assert POLICY.playbook("high").visit_claim_within_minutes == 15
