"""Loading the policy, grading a warning with reasons, and turning a playbook into a timed plan."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.policy.models import PolicyVersion
from services.dispatcher.policy.schemas import TIER_ORDER, TIERS, Playbook, PolicyDoc, Rule
from shared.audit.service import canonical_json
from shared.contracts.contact import CallWindow, next_call_time

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")


class PolicyError(ValueError):
    pass


@dataclass(slots=True)
class GradeInput:
    """What grading looks at: the warning, plus how many warnings its case has with this one."""

    fraud_type: str
    signal: str
    amount_at_risk: Decimal | None
    risk_score: int | None
    age: int | None
    region_code: str
    case_warnings: int


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    effect: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "effect": self.effect, "why": self.why}


Predicate = Callable[[GradeInput], bool]


def _compile(cond: dict[str, Any]) -> Predicate:
    """A condition mapping -> one Python predicate (all keys of a mapping must hold)."""
    checks: list[Predicate] = []
    for key, value in cond.items():
        if key == "fraud_type_in":
            allowed = frozenset(value)
            checks.append(lambda g, a=allowed: g.fraud_type in a)
        elif key == "signal_in":
            allowed = frozenset(value)
            checks.append(lambda g, a=allowed: g.signal in a)
        elif key == "amount_at_risk_gte":
            limit = Decimal(str(value))
            checks.append(lambda g, v=limit: g.amount_at_risk is not None and g.amount_at_risk >= v)
        elif key == "risk_score_gte":
            checks.append(lambda g, v=int(value): g.risk_score is not None and g.risk_score >= v)
        elif key == "age_gte":
            checks.append(lambda g, v=int(value): g.age is not None and g.age >= v)
        elif key == "age_lt":
            checks.append(lambda g, v=int(value): g.age is not None and g.age < v)
        elif key == "case_warnings_gte":
            checks.append(lambda g, v=int(value): g.case_warnings >= v)
        elif key == "region_prefix_in":
            prefixes = tuple(str(p) for p in value)
            checks.append(lambda g, p=prefixes: g.region_code.startswith(p))
        elif key == "any":
            subs = [_compile(c) for c in value]
            if len(subs) == 2:
                first, second = subs
                checks.append(lambda g, a=first, b=second: a(g) or b(g))
            else:
                checks.append(lambda g, s=subs: any(f(g) for f in s))
        elif key == "all":
            subs = [_compile(c) for c in value]
            checks.append(lambda g, s=subs: all(f(g) for f in s))
    if len(checks) == 1:
        return checks[0]
    return lambda g: all(c(g) for c in checks)


@dataclass(frozen=True)
class LoadedPolicy:
    version: str
    doc: PolicyDoc
    content: dict[str, Any]
    tz: ZoneInfo
    _rules: tuple[tuple[Rule, Predicate], ...]
    # Per tier, worked out once at load: the channels at the first moment, and the
    # timed steps of a fresh plan as offsets from its start (deadline = the tier's).
    first_channels: dict[str, tuple[str, ...]]
    fresh_plan_offsets: dict[str, tuple[tuple[str, timedelta], ...]]

    def call_window(self, tier: str) -> CallWindow | None:
        """The tier's call window as the callcenter reads it (None: calls at any hour)."""
        window = self.playbook(tier).call_window
        return None if window is None else _call_window(window.start, window.end, self.tz.key)

    def grade(self, g: GradeInput | Any) -> tuple[str, list[Reason]]:
        """The tier for one warning and every rule that decided it, in the order they applied."""
        tier = self.doc.signals.get(g.signal, self.doc.signals["other"])
        reasons = [Reason("signal", tier, f"signal {g.signal} suggests {tier}")]
        level = TIER_ORDER[tier]
        raises = 0
        for rule, predicate in self._rules:
            if not predicate(g):
                continue
            if rule.at_least is not None:
                floor = TIER_ORDER[rule.at_least]
                if floor > level:
                    level = floor
                    reasons.append(Reason(rule.id, f"at least {rule.at_least}", rule.description or rule.id))
                else:
                    reasons.append(Reason(rule.id, "no change (already at or above)",
                                          rule.description or rule.id))
            else:
                raises += rule.raise_ or 0
                reasons.append(Reason(rule.id, f"raise {rule.raise_}", rule.description or rule.id))
        final = TIERS[min(level + raises, 2)]
        return final, reasons

    def playbook(self, tier: str) -> Playbook:
        return self.doc.playbooks[tier]  # type: ignore[index]


def load_policy(path: str | Path | None) -> LoadedPolicy:
    """Read and validate a policy file (YAML or JSON); `None` loads the built-in default."""
    source = Path(path) if path else DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {source} is not valid YAML: {exc}") from exc
    return policy_from_content(raw, origin=str(source))


def policy_from_content(raw: Any, origin: str = "stored") -> LoadedPolicy:
    try:
        doc = PolicyDoc.model_validate(raw)
    except ValueError as exc:
        raise PolicyError(f"policy {origin} is invalid: {exc}") from exc
    try:
        tz = ZoneInfo(doc.timezone)
    except Exception as exc:  # noqa: BLE001
        raise PolicyError(f"policy {origin}: unknown timezone {doc.timezone!r}") from exc
    content = doc.model_dump(mode="json", by_alias=True)
    version = hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]
    rules = tuple((rule, _compile(rule.when)) for rule in doc.rules)
    epoch = datetime(2000, 1, 1, tzinfo=tz)
    firsts: dict[str, tuple[str, ...]] = {}
    offsets: dict[str, tuple[tuple[str, timedelta], ...]] = {}
    for tier, playbook in doc.playbooks.items():
        firsts[tier] = tuple(first_channels(playbook))
        due = epoch + timedelta(minutes=playbook.deadline_minutes)
        offsets[tier] = tuple((st.name, st.at - epoch) for st in plan_steps(playbook, plan_started_at=epoch, due_at=due))
    return LoadedPolicy(version=version, doc=doc, content=content, tz=tz, _rules=rules, first_channels=firsts,
                        fresh_plan_offsets=offsets)


class PolicyStore:
    """The current policy plus every stored version a running task may still refer to."""

    def __init__(self, current: LoadedPolicy) -> None:
        self.current = current
        self._by_version: dict[str, LoadedPolicy] = {current.version: current}

    async def register_current(self, session: AsyncSession) -> None:
        """Store the current policy's content under its version (once; versions never change)."""
        await session.execute(
            insert(PolicyVersion)
            .values(id=self.current.version, name=self.current.doc.name, content=self.current.content)
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def get(self, session: AsyncSession, version: str) -> LoadedPolicy:
        found = self._by_version.get(version)
        if found is None:
            row = (await session.execute(select(PolicyVersion).where(PolicyVersion.id == version))).scalar_one()
            found = policy_from_content(row.content, origin=f"version {version}")
            self._by_version[version] = found
        return found


# ---- plans: a playbook laid out in time --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlanStep:
    name: str     # "channel:auto_call", "visit", "escalate", "breach"
    at: datetime


def plan_steps(playbook: Playbook, *, plan_started_at: datetime, due_at: datetime) -> list[PlanStep]:
    """Every timed step of a plan (channels after the first moment, visit, escalation, breach), by time."""
    steps = [
        PlanStep(f"channel:{c.channel}", plan_started_at + timedelta(minutes=c.after_minutes))
        for c in playbook.channels if c.after_minutes > 0
    ]
    if playbook.visit_after_minutes is not None:
        steps.append(PlanStep("visit", plan_started_at + timedelta(minutes=playbook.visit_after_minutes)))
    if playbook.escalate_at_fraction is not None:
        steps.append(PlanStep("escalate", plan_started_at + (due_at - plan_started_at) * playbook.escalate_at_fraction))
    steps.append(PlanStep("breach", due_at))
    return sorted(steps, key=lambda s: s.at)


def first_channels(playbook: Playbook) -> list[str]:
    return [c.channel for c in playbook.channels if c.after_minutes == 0]


def within_call_window(playbook: Playbook, when: datetime, tz: ZoneInfo) -> datetime:
    """The earliest moment at or after `when` that the playbook allows a call (local time of `tz`)."""
    window = playbook.call_window
    if window is None:
        return when
    return _next_call_time(window.start, window.end, tz.key, when, when.tzinfo)


# Ingest asks these for every record of a batch with the same `now`: each answer is worked out once.
# (The tzinfo is part of the key: equal instants in two zones compare equal, and the answer keeps the zone.)
@lru_cache(maxsize=16)
def _call_window(start: str, end: str, tz_key: str) -> CallWindow:
    return CallWindow(start=start, end=end, timezone=tz_key)


@lru_cache(maxsize=256)
def _next_call_time(start: str, end: str, tz_key: str, when: datetime, _zone: object) -> datetime:
    return next_call_time(_call_window(start, end, tz_key), when)
