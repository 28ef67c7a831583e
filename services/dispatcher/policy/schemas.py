"""The policy file's shape, validated when it is loaded (a bad policy never starts a service)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.clock import LOCAL_TZ

Tier = Literal["low", "medium", "high"]
Channel = Literal["bot_alert", "auto_call", "operator_call"]
TIER_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
TIERS: tuple[str, ...] = ("low", "medium", "high")

CONDITION_KEYS = {
    "fraud_type_in", "signal_in", "amount_at_risk_gte", "risk_score_gte", "age_gte", "age_lt",
    "case_warnings_gte", "region_prefix_in", "any", "all",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]{1,48}$")
    description: str = ""
    when: dict[str, Any]
    at_least: Tier | None = None
    raise_: int | None = Field(default=None, alias="raise", ge=1, le=2)

    @field_validator("when")
    @classmethod
    def _known_conditions(cls, when: dict[str, Any]) -> dict[str, Any]:
        _check_condition(when)
        return when

    @model_validator(mode="after")
    def _one_effect(self) -> Rule:
        if (self.at_least is None) == (self.raise_ is None):
            raise ValueError(f"rule {self.id}: give exactly one of 'at_least' or 'raise'")
        return self


def _check_condition(cond: Any) -> None:
    if not isinstance(cond, dict) or not cond:
        raise ValueError("a condition is a non-empty mapping")
    unknown = set(cond) - CONDITION_KEYS
    if unknown:
        raise ValueError(f"unknown condition(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(CONDITION_KEYS))}")
    for key in ("any", "all"):
        if key in cond:
            if not isinstance(cond[key], list) or not cond[key]:
                raise ValueError(f"'{key}' takes a non-empty list of conditions")
            for sub in cond[key]:
                _check_condition(sub)


class ChannelStep(_Strict):
    channel: Channel
    after_minutes: float = Field(ge=0)


class AutoCallRetry(_Strict):
    max_attempts: int = Field(ge=1, le=20)
    retry_after_minutes: dict[str, float]


class CallWindow(_Strict):
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")


class Playbook(_Strict):
    deadline_minutes: float = Field(gt=0)
    channels: list[ChannelStep] = Field(min_length=1)
    auto_call: AutoCallRetry
    visit_after_minutes: float | None = Field(default=None, ge=0)
    # A visit no officer has taken this long after it was requested goes to a supervisor (who can send
    # officers from elsewhere); without it an untaken visit is only escalated at the deadline.
    visit_claim_within_minutes: float | None = Field(default=None, gt=0)
    escalate_at_fraction: float | None = Field(default=None, gt=0, le=1)
    call_window: CallWindow | None = None


class PolicyDoc(_Strict):
    name: str = "unnamed policy"
    timezone: str = LOCAL_TZ.key
    signals: dict[str, Tier]
    rules: list[Rule] = []
    playbooks: dict[Tier, Playbook]

    @model_validator(mode="after")
    def _complete(self) -> PolicyDoc:
        missing = set(TIERS) - set(self.playbooks)
        if missing:
            raise ValueError(f"playbooks missing for tier(s): {', '.join(sorted(missing))}")
        if "other" not in self.signals:
            raise ValueError("signals must give a tier for 'other'")
        return self
