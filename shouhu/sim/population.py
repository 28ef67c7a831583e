"""The day's citizens, drawn once from the scenario (seeded): who is warned when, about what, and how they answer.

Each citizen has their own phone number, so each warning opens its own case; what they will do is decided
here (answers the first call or not, which key or button) and played by the sandbox and the agents.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from shouhu.sim.scenario import TIER_SIGNALS, Scenario


@dataclass(slots=True)
class Citizen:
    index: int
    at_s: float              # when the warning is sent, simulated seconds from the start of the day
    phone: str
    region_code: str
    tier_hint: str           # the tier the sender's signal suggests (the dispatcher decides the real one)
    signal: str
    fraud_type: str
    age: int
    source: str
    has_chat: bool
    answers_auto_call: bool  # picks up the automated calls (scripted once in the sandbox: the phone is on or off)
    says: str                # acknowledged | loss_reported | callback_requested | not_me
    presses_button: bool     # answers the Telegram alert
    read_after_s: float      # how soon they read it
    chat_id: int | None = None
    task_id: str | None = None
    tier: str | None = None  # as the dispatcher graded it

    @property
    def key(self) -> str:
        """The digit pressed on an automated call (not_me: silence, the keypad has no key for it)."""
        return {"acknowledged": "1", "callback_requested": "2", "loss_reported": "3"}.get(self.says, "")


def _pick(rng: random.Random, shares: dict[str, float]) -> str:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def _arrival_times(s: Scenario, rng: random.Random) -> list[tuple[float, str | None, dict[str, float] | None]]:
    """(seconds from the start, source, burst tier mix): Poisson within each hour of the profile, bursts evenly."""
    times: list[tuple[float, str | None, dict[str, float] | None]] = []
    per_hour = s.hourly_warnings()
    for h in range(int(math.ceil(s.day_h))):
        hour_of_day = int(s.start_h + h) % 24
        span_s = min(3600.0, s.day_s - h * 3600)
        count = _poisson(rng, per_hour[hour_of_day] * s.volume_fraction * span_s / 3600)
        times += [(h * 3600 + rng.random() * span_s, None, None) for _ in range(count)]
    for burst in s.bursts:
        offset_h = (burst.at_h - s.start_h) % 24
        if offset_h >= s.day_h:
            continue
        count = round(burst.count * s.volume_fraction)
        span_s = burst.minutes * 60
        times += [(offset_h * 3600 + span_s * i / max(1, count), burst.source, burst.tier_mix) for i in range(count)]
    return sorted(times, key=lambda t: t[0])


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation: Knuth's product method underflows for large means
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def population(s: Scenario) -> list[Citizen]:
    rng = random.Random(s.seed)
    regions = s.region_codes()
    people = []
    for i, (at_s, source, burst_mix) in enumerate(_arrival_times(s, rng)):
        tier = _pick(rng, burst_mix or s.tier_mix)
        band = rng.choices(s.ages, weights=[a.share for a in s.ages])[0]
        hour = int(s.start_h + at_s / 3600) % 24
        people.append(Citizen(
            index=i, at_s=at_s, phone=f"+86139{s.seed % 100:02d}{i:06d}", region_code=rng.choice(regions),
            tier_hint=tier, signal=rng.choice(TIER_SIGNALS[tier]), fraud_type=_pick(rng, s.fraud_types),
            age=rng.randint(band.min_age, band.max_age), source=source or rng.choice(("bank", "telecom", "platform")),
            has_chat=rng.random() < s.telegram_share,
            answers_auto_call=rng.random() < s.answering.auto_call_by_hour[hour],
            says=_pick(rng, s.answering.says), presses_button=rng.random() < s.answering.telegram_press,
            # lognormal around the median, sigma 1: most read within minutes, a few hours later
            read_after_s=s.answering.telegram_read_median_s * math.exp(rng.gauss(0, 1))))
    return people
