"""A simulated province day: what the scenario file says, checked on load (pydantic), with its defaults.

The default scenario (`default.yaml` beside this file) is Zhejiang's scale: ~30,000 warnings a day (the
paper's 10.38 million over its period, about a year), 1,580 seats (580 PC seats and 1,000 desk phones),
100 districts. Every share is a fraction 0-1; every duration names its unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "default.yaml"
TIERS = ("high", "medium", "low")
# The signal each tier's warnings carry (the default policy's suggestion for that tier; the policy's rules,
# e.g. age 65+, may still raise it: the tiers are read back from the dispatcher, not assumed).
TIER_SIGNALS = {
    "high": ("transfer_in_progress", "transfer_to_flagged_account", "remote_control_app", "screen_sharing"),
    "medium": ("fraud_call_received", "fraud_app_installed", "fraud_site_visited"),
    "low": ("fraud_sms_received",),
}
PHONE_ANSWERS = ("acknowledged", "loss_reported", "callback_requested", "not_me")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _shares_sum_to_one(shares: dict[str, float], what: str) -> None:
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{what}: shares must add up to 1 (they add up to {total:.4f})")


class Burst(_Strict):
    """One sender dumping many warnings at once (a bank's batch after an incident)."""

    at_h: float = Field(ge=0, lt=24, description="hour of the day it starts (local time)")
    count: int = Field(ge=1)
    minutes: float = Field(gt=0, description="spread evenly over this many minutes")
    source: str = "bank"
    tier_mix: dict[str, float] = Field(default_factory=lambda: {"high": 0.6, "medium": 0.4})

    @model_validator(mode="after")
    def _check(self) -> Burst:
        _shares_sum_to_one(self.tier_mix, "burst tier_mix")
        return self


class AgeBand(_Strict):
    min_age: int = Field(ge=0, le=120)
    max_age: int = Field(ge=0, le=120)
    share: float = Field(ge=0, le=1)


class Answering(_Strict):
    """How citizens answer: picking up a call (by hour and channel), reading the Telegram alert, what they say."""

    # Probability that a call is picked up, one value per local hour 0-23, per channel.
    auto_call_by_hour: list[float] = Field(min_length=24, max_length=24)
    operator_call_by_hour: list[float] = Field(min_length=24, max_length=24)
    ring_s: float = Field(6.0, ge=0, le=55, description="how long a phone rings before it is picked up")
    # Telegram: the share of alerts read and answered with a button, and how soon (median, lognormal).
    telegram_press: float = Field(ge=0, le=1)
    telegram_read_median_s: float = Field(gt=0)
    # What a citizen who answers says (the alert's buttons; keys 1 / 3 / 2 on the phone; not_me stays silent
    # on the phone, since the keypad has no key for it).
    says: dict[str, float]
    # Seat calls: a citizen reached by a person is dissuaded, or reports a loss (their share of `says`).

    @model_validator(mode="after")
    def _check(self) -> Answering:
        for p in (*self.auto_call_by_hour, *self.operator_call_by_hour):
            if not 0 <= p <= 1:
                raise ValueError("answer probabilities are fractions 0-1")
        if set(self.says) != set(PHONE_ANSWERS):
            raise ValueError(f"says: give a share for each of {', '.join(PHONE_ANSWERS)}")
        _shares_sum_to_one(self.says, "says")
        return self


class Shift(_Strict):
    name: str
    start_h: float = Field(ge=0, lt=24)
    end_h: float = Field(gt=0, le=48, description="may pass midnight: 32 = 08:00 next day")
    seats: int = Field(ge=0)


class Seats(_Strict):
    """The 96110 seats: shifts, and how long a call and its wrap-up take (mean, exponential)."""

    unit: str = Field("33", description="the seats' unit: the province's 96110 calls out for every district")
    shifts: list[Shift] = Field(min_length=1)
    handle_s: float = Field(gt=0, description="mean talk time of a seat call")
    wrap_up_s: float = Field(ge=0, description="mean time after a call before the next claim")
    claim_every_s: float = Field(10.0, gt=0, description="a free seat asks for work this often when none waits")

    def on_duty(self, hour: float) -> int:
        """Seats on duty at this hour of the day (a shift may pass midnight)."""
        total = 0
        for shift in self.shifts:
            for h in (hour, hour + 24):
                if shift.start_h <= h < shift.end_h:
                    total += shift.seats
                    break
        return total


class Officers(_Strict):
    """Officers and grid workers per district who go and see the citizen (见面处置)."""

    per_district: int = Field(ge=0)
    travel_s: float = Field(gt=0, description="mean one-way travel time")
    visit_s: float = Field(gt=0, description="mean time with the citizen")
    found_share: float = Field(ge=0, le=1, description="share of visits where the citizen is found")
    poll_every_s: float = Field(60.0, gt=0, description="how often the duty desk looks for new visits")


class Scenario(_Strict):
    name: str
    seed: int = 1
    # Clock: a day of `day_h` hours, on the services' clock running `time_scale` times faster than real time.
    time_scale: float = Field(100.0, gt=0, le=2000)
    day_h: float = Field(24.0, gt=0, le=24)
    start_h: float = Field(0.0, ge=0, lt=24, description="local hour the simulated day starts")
    # The share of the province's volume actually sent through the services on this machine; seats and
    # officers are scaled by the same fraction, so that loads per seat and per officer stay the province's.
    volume_fraction: float = Field(1.0, gt=0, le=1)
    # After the day: how long (simulated) to keep the agents working so the last warnings can meet deadlines.
    drain_h: float = Field(2.0, ge=0, le=72)
    warnings_per_day: int = Field(ge=1)
    hourly_profile: list[float] = Field(min_length=24, max_length=24, description="relative weight of each hour")
    bursts: list[Burst] = Field(default_factory=list)
    tier_mix: dict[str, float]
    fraud_types: dict[str, float]
    ages: list[AgeBand] = Field(min_length=1)
    telegram_share: float = Field(ge=0, le=1, description="citizens with a bound Telegram chat")
    districts: int = Field(100, ge=1, le=100)
    answering: Answering
    seats: Seats
    officers: Officers
    # Twilio's and Telegram's limits as the services are told them (per second of real time on this machine).
    calls_per_s: int = Field(20, ge=1)
    plan_target: dict[str, float] = Field(
        default_factory=lambda: {"high_in_time": 0.99, "seat_wait_s": 600, "visit_wait_s": 1800},
        description="shouhu plan: the share of high tier in time, the seat and officer waits that allow it")

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if set(self.tier_mix) - set(TIERS):
            raise ValueError(f"tier_mix: tiers are {', '.join(TIERS)}")
        _shares_sum_to_one(self.tier_mix, "tier_mix")
        _shares_sum_to_one(self.fraud_types, "fraud_types")
        _shares_sum_to_one({str(i): a.share for i, a in enumerate(self.ages)}, "ages")
        if sum(self.hourly_profile) <= 0:
            raise ValueError("hourly_profile: at least one hour must have warnings")
        for band in self.ages:
            if band.max_age < band.min_age:
                raise ValueError("ages: max_age below min_age")
        return self

    # ---- derived figures -------------------------------------------------------------------------------

    @property
    def day_s(self) -> float:
        return self.day_h * 3600

    def region_codes(self) -> list[str]:
        """The districts: 33CCDD, ten cities of ten districts (Zhejiang's province code 33)."""
        return [f"33{1 + i // 10:02d}{1 + i % 10:02d}" for i in range(self.districts)]

    def hourly_warnings(self) -> list[float]:
        """Warnings expected in each local hour of the day (bursts excluded), at full province volume."""
        total = sum(self.hourly_profile)
        return [self.warnings_per_day * w / total for w in self.hourly_profile]

    def sent_warnings(self) -> int:
        """What the run sends through the services: the day's warnings inside the window, at volume_fraction."""
        return round(self.volume_fraction * (self.warnings_per_day * self._window_share()
                                             + sum(b.count for b in self.bursts if self._in_window(b.at_h))))

    def _window_share(self) -> float:
        weights = self.hourly_profile
        covered = sum(weights[int(self.start_h + h) % 24] for h in range(int(round(self.day_h))))
        return covered / sum(weights)

    def _in_window(self, hour: float) -> bool:
        return (hour - self.start_h) % 24 < self.day_h

    def scaled(self, count: int) -> int:
        """A head count (seats, officers) at volume_fraction; at least one where there was one."""
        return 0 if count == 0 else max(1, round(count * self.volume_fraction))


def load(path: Path | str | None = None) -> Scenario:
    """The scenario in `path` (YAML), or the default; invalid files raise pydantic's ValidationError."""
    source = Path(path) if path else DEFAULT_SCENARIO
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    return Scenario.model_validate(data)


Channel = Literal["auto_call", "operator_call"]
