"""Deadline compliance and regional ranking (警情研判 → 警示通报 → 排名约谈), computed in SQL. Read-only.

Definitions (what a supervisor's numbers mean):
- a task counts in a period when its deadline (due_at) falls in [from, to);
- "closed in time": closed with an outcome at or before its deadline;
- "breached": the deadline passed without an outcome (whether closed later or still open);
- "open": not closed at the time of the report (still being worked);
- "reached": a person answered a call or pressed a button (reached_at set);
- time to first contact: task opened -> reached; time to closure: task opened -> closed.

The console counts a period differently (`decided_compliance`, `daily_decided`): a task counts on the day its
outcome was decided, so "today" is never 0/0 while work is being done:
- closed in time: on the day it closed (even when its deadline is tomorrow);
- breached: on the day its deadline passed (whether closed later or still open);
- tasks still open and not yet due are not decided: they are shown beside the rate as "open now", with
  how many are at risk (due within the next hour).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import LOCAL_TZ
from shared.sql import sql

OUTCOMES = ("acknowledged", "dissuaded", "loss_reported", "unreachable", "false_positive", "refused")

# The reports over a period run as prepared statements (the driver keeps them per connection). After five runs
# PostgreSQL may switch such a statement to a generic plan, made without the parameters' values; with
# `region_code LIKE $1` unknown it can no longer scan ix_tasks_due_region for the unit's range and instead
# fetches every task due in the period nationwide to filter them. At 1M tasks (`shouhu bench consoles`, unit 33)
# that doubled GET /v1/reports/compliance (p95 69 ms instead of 31) and the console overview (65 instead of 31).
# Which unit (a province or a district) and which period is asked changes the best plan anyway, so these
# statements are planned for their actual values every time (a fraction of a millisecond each). SET LOCAL: for
# this transaction only.
_CUSTOM_PLANS = sql("SET LOCAL plan_cache_mode = force_custom_plan")


async def plan_for_values(session: AsyncSession) -> None:
    """Plan this transaction's statements for their actual parameters (see _CUSTOM_PLANS)."""
    await session.execute(_CUSTOM_PLANS)


_FIGURES = (
    " count(*) AS due,"
    " count(*) FILTER (WHERE status = 'closed' AND closed_at <= due_at) AS closed_in_time,"
    " count(*) FILTER (WHERE breached OR (status = 'closed' AND closed_at > due_at)) AS breached,"
    " count(*) FILTER (WHERE status <> 'closed') AS still_open,"
    " count(*) FILTER (WHERE reached_at IS NOT NULL) AS reached,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM reached_at - created_at))"
    "   FILTER (WHERE reached_at IS NOT NULL) AS contact_p50_s,"
    " percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM reached_at - created_at))"
    "   FILTER (WHERE reached_at IS NOT NULL) AS contact_p90_s,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM closed_at - created_at))"
    "   FILTER (WHERE status = 'closed') AS closure_p50_s,"
    " percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM closed_at - created_at))"
    "   FILTER (WHERE status = 'closed') AS closure_p90_s,"
    + ", ".join(f" count(*) FILTER (WHERE outcome = '{o}') AS outcome_{o}" for o in OUTCOMES)
)
_COMPLIANCE = sql(
    "SELECT tier," + _FIGURES +
    " FROM tasks WHERE region_code LIKE :unit AND due_at >= :from_ AND due_at < :to"
    " GROUP BY ROLLUP (tier)"
)

_IN_TIME = "(status = 'closed' AND closed_at <= due_at)"
# Tasks whose outcome was decided in [from, to): closed in time then, or their deadline passed then (before
# :until = min(to, now)) without a closure in time. Both imply due_at >= from (a task closed in time closed before
# its deadline), which keeps the scan on ix_tasks_due_region's range for the unit.
_DECIDED_WHERE = (
    " WHERE region_code LIKE :unit AND due_at >= :from_ AND ("
    f"  ({_IN_TIME} AND closed_at >= :from_ AND closed_at < :to)"
    f"  OR (due_at < :until AND NOT {_IN_TIME}))"
)
_DECIDED = sql("SELECT tier," + _FIGURES + " FROM tasks" + _DECIDED_WHERE + " GROUP BY ROLLUP (tier)")
_DAILY_DECIDED = sql(
    f"SELECT (CASE WHEN {_IN_TIME} THEN closed_at ELSE due_at END AT TIME ZONE :tz)::date AS day,"
    f" count(*) AS decided, count(*) FILTER (WHERE {_IN_TIME}) AS in_time FROM tasks" + _DECIDED_WHERE +
    " GROUP BY 1"
)
# Open and not yet due: nothing decided about them yet. At risk: due within AT_RISK_S.
_OPEN_NOW = sql(
    "SELECT tier, count(*) AS open, count(*) FILTER (WHERE due_at < :soon) AS at_risk FROM tasks"
    " WHERE region_code LIKE :unit AND status <> 'closed' AND due_at >= :now GROUP BY ROLLUP (tier)"
)
AT_RISK_S = 3600
# "Until now" includes what happened at this very instant (a task closed a moment ago, on a frozen clock in tests).
_INSTANT = timedelta(microseconds=1)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


async def compliance(session: AsyncSession, *, unit: str, from_: datetime, to: datetime) -> dict[str, Any]:
    """Per tier and in total: due, closed in time, breached, open, reach rate, contact and closure times, outcomes."""
    await plan_for_values(session)
    rows = (await session.execute(_COMPLIANCE, {"unit": unit + "%", "from_": from_, "to": to})).all()
    return {"unit": unit, "from": from_, "to": to, **_by_tier(rows)}


def _by_tier(rows: list[Any], *, decided: bool = False) -> dict[str, Any]:
    by_tier: dict[str, Any] = {}
    for row in rows:
        key = row.tier or "all"
        by_tier[key] = {
            "due": row.due, "closed_in_time": row.closed_in_time,
            # Decided and not in time is breached, even before the timer has flagged it.
            "breached": row.due - row.closed_in_time if decided else row.breached,
            "still_open": row.still_open, "compliance_rate": _rate(row.closed_in_time, row.due),
            "reach_rate": _rate(row.reached, row.due),
            "first_contact_p50_s": _seconds(row.contact_p50_s), "first_contact_p90_s": _seconds(row.contact_p90_s),
            "closure_p50_s": _seconds(row.closure_p50_s), "closure_p90_s": _seconds(row.closure_p90_s),
            "outcomes": {o: getattr(row, f"outcome_{o}") for o in OUTCOMES},
        }
    empty = {"due": 0, "closed_in_time": 0, "breached": 0, "still_open": 0, "compliance_rate": None,
             "reach_rate": None, "first_contact_p50_s": None, "first_contact_p90_s": None, "closure_p50_s": None,
             "closure_p90_s": None, "outcomes": dict.fromkeys(OUTCOMES, 0)}
    return {"tiers": {t: by_tier.get(t, empty) for t in ("high", "medium", "low")},
            "total": by_tier.get("all", empty)}


async def decided_compliance(session: AsyncSession, *, unit: str, from_: datetime, to: datetime,
                             now: datetime) -> dict[str, Any]:
    """The console's rule (module docstring): tasks decided in [from, to), per tier and in total, with the same
    figures as `compliance` ("due" = decided), plus `open_now`: tasks still open and not yet due, and at risk."""
    await plan_for_values(session)
    params = {"unit": unit + "%", "from_": from_, "to": to, "until": min(to, now)}
    rows = (await session.execute(_DECIDED, params)).all()
    return {"unit": unit, "from": from_, "to": to, "rule": "decided", **_by_tier(rows, decided=True),
            "open_now": await open_now(session, unit=unit, now=now)}


async def open_now(session: AsyncSession, *, unit: str, now: datetime) -> dict[str, dict[str, int]]:
    """Open tasks whose deadline is still ahead, per tier and in total ("all"): how many, how many due within
    the next hour (at risk)."""
    params = {"unit": unit + "%", "now": now, "soon": now + timedelta(seconds=AT_RISK_S)}
    out = {t: {"open": 0, "at_risk": 0} for t in ("high", "medium", "low", "all")}
    for row in (await session.execute(_OPEN_NOW, params)).all():
        out[row.tier or "all"] = {"open": row.open, "at_risk": row.at_risk}
    return out


async def daily_decided(session: AsyncSession, *, unit: str, from_: datetime, now: datetime,
                        tz: str) -> dict[Any, Any]:
    """Per local day since `from_`: tasks decided that day and how many of them in time (see the module docstring)."""
    await plan_for_values(session)
    params = {"unit": unit + "%", "from_": from_, "to": now + _INSTANT, "until": now, "tz": tz}
    return {r.day: r for r in (await session.execute(_DAILY_DECIDED, params)).all()}


_TREND = sql(
    f"SELECT (CASE WHEN {_IN_TIME} THEN closed_at ELSE due_at END AT TIME ZONE :tz)::date AS day, tier,"
    " left(region_code, :width) AS unit,"
    f" count(*) AS decided, count(*) FILTER (WHERE {_IN_TIME}) AS in_time FROM tasks" + _DECIDED_WHERE +
    " GROUP BY 1, 2, 3"
)
TREND_TIERS = ("high", "medium", "low", "all")


async def daily_trend(session: AsyncSession, *, unit: str, now: datetime, days: int = 30,
                      tz: ZoneInfo = LOCAL_TZ) -> dict[str, Any]:
    """Deadline compliance per local day and tier for the last `days` days up to now (today included), for the
    whole unit ("") and for each unit one level below it (the console's rule: a task counts on the day its
    outcome was decided). One query, grouped by local day, tier and child unit.

    Returns {"unit", "days": [date], "units": [child codes], "series": {"" | child: {tier | "all":
    {"decided": [n per day], "in_time": [n per day], "rate": [0..1 or None per day]}}}}.
    """
    today = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    width = child_width(unit)
    await plan_for_values(session)
    params = {"unit": unit + "%", "from_": start, "to": now + _INSTANT, "until": now, "tz": tz.key, "width": width}
    rows = (await session.execute(_TREND, params)).all()
    dates = [(start + timedelta(days=i)).date() for i in range(days)]
    # A district has no units below it: its own line is the only one.
    children = sorted({r.unit for r in rows}) if width > len(unit) else []

    def empty() -> dict[str, dict[str, list[Any]]]:
        return {tier: {"decided": [0] * days, "in_time": [0] * days} for tier in TREND_TIERS}

    series = {key: empty() for key in ["", *children]}
    for row in rows:
        index = (row.day - dates[0]).days
        if not 0 <= index < days:
            continue
        for key in {"", row.unit} & series.keys():
            for tier in (row.tier, "all"):
                series[key][tier]["decided"][index] += row.decided
                series[key][tier]["in_time"][index] += row.in_time
    for by_tier in series.values():
        for figures in by_tier.values():
            figures["rate"] = [_rate(i, d) for i, d in zip(figures["in_time"], figures["decided"], strict=True)]
    return {"unit": unit, "days": dates, "units": children, "series": series}


def compliance_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The compliance report flattened to one row per tier and a total row (CSV)."""
    rows = []
    for tier, figures in [*report["tiers"].items(), ("all", report["total"])]:
        flat = {k: v for k, v in figures.items() if k != "outcomes"}
        rows.append({"unit": report["unit"], "tier": tier, **flat,
                     **{f"outcome_{k}": v for k, v in figures["outcomes"].items()}})
    return rows


_RANKING = sql(
    "WITH units AS ("
    "  SELECT left(region_code, :width) AS unit, due_at, status, closed_at, breached, reached_at FROM tasks"
    "  WHERE region_code LIKE :unit AND due_at >= :prev_from AND due_at < :to)"
    " SELECT unit,"
    "  count(*) FILTER (WHERE due_at >= :from_) AS due,"
    "  count(*) FILTER (WHERE due_at >= :from_ AND status = 'closed' AND closed_at <= due_at) AS in_time,"
    "  count(*) FILTER (WHERE due_at >= :from_ AND reached_at IS NOT NULL) AS reached,"
    "  count(*) FILTER (WHERE due_at < :from_) AS prev_due,"
    "  count(*) FILTER (WHERE due_at < :from_ AND status = 'closed' AND closed_at <= due_at) AS prev_in_time"
    " FROM units GROUP BY unit"
)
_WARNINGS_BY_UNIT = sql(
    "SELECT left(region_code, :width) AS unit, count(*) FILTER (WHERE received_at >= :from_) AS n,"
    " count(*) FILTER (WHERE received_at < :from_) AS prev_n"
    " FROM warnings WHERE region_code LIKE :unit AND received_at >= :prev_from AND received_at < :to GROUP BY 1"
)


def child_width(unit: str) -> int:
    """The units one level below: nationwide -> provinces (2 digits), province -> cities (4), city -> districts (6)."""
    return min(len(unit) + 2, 6) if unit else 2


async def ranking(session: AsyncSession, *, unit: str, from_: datetime, to: datetime) -> dict[str, Any]:
    """Units one level below `unit`: warning volume, reach and compliance, with the change since the period before.

    Ordered worst compliance first (who gets the warning notice and the meeting), then by volume.
    """
    width = child_width(unit)
    params = {"unit": unit + "%", "width": width, "from_": from_, "to": to, "prev_from": from_ - (to - from_)}
    await plan_for_values(session)
    tasks = {r.unit: r for r in (await session.execute(_RANKING, params)).all()}
    warnings = {r.unit: r for r in (await session.execute(_WARNINGS_BY_UNIT, params)).all()}
    rows = []
    for code in sorted(set(tasks) | set(warnings)):
        t, w = tasks.get(code), warnings.get(code)
        due = t.due if t else 0
        compliance_rate = _rate(t.in_time, due) if t else None
        previous = _rate(t.prev_in_time, t.prev_due) if t else None
        rows.append({
            "unit": code, "warnings": w.n if w else 0, "warnings_change": (w.n - w.prev_n) if w else 0,
            "tasks_due": due, "reach_rate": _rate(t.reached, due) if t else None,
            "compliance_rate": compliance_rate,
            "compliance_change": None if compliance_rate is None or previous is None
            else round(compliance_rate - previous, 4),
        })
    rows.sort(key=lambda r: (r["compliance_rate"] if r["compliance_rate"] is not None else 2.0, -r["warnings"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {"unit": unit, "level": width, "from": from_, "to": to, "units": rows}


_COUNTS = sql(
    "SELECT tier, status, count(*) AS n, count(*) FILTER (WHERE breached) AS breached,"
    " count(*) FILTER (WHERE escalated_at IS NOT NULL) AS escalated"
    " FROM tasks WHERE region_code LIKE :unit AND status <> 'closed' GROUP BY tier, status"
)
_URGENT = sql(
    "SELECT id, tier, status, due_at, breached, escalated_at, region_code, fraud_type FROM tasks"
    " WHERE region_code LIKE :unit AND status <> 'closed' ORDER BY due_at LIMIT :limit"
)


async def overview(session: AsyncSession, *, unit: str, now: datetime, limit: int = 20) -> dict[str, Any]:
    """Live work in the unit: open tasks by tier and status, and the ones nearest to (or past) their deadline."""
    counts: dict[str, dict[str, int]] = {t: {"open": 0, "in_progress": 0, "breached": 0, "escalated": 0}
                                         for t in ("high", "medium", "low")}
    for row in (await session.execute(_COUNTS, {"unit": unit + "%"})).all():
        counts[row.tier][row.status] += row.n
        counts[row.tier]["breached"] += row.breached
        counts[row.tier]["escalated"] += row.escalated
    urgent = [
        {"task_id": r.id, "tier": r.tier, "status": r.status, "due_at": r.due_at, "breached": r.breached,
         "escalated": r.escalated_at is not None, "region_code": r.region_code, "fraud_type": r.fraud_type,
         "minutes_left": round((r.due_at - now).total_seconds() / 60)}
        for r in (await session.execute(_URGENT, {"unit": unit + "%", "limit": limit})).all()
    ]
    return {"unit": unit, "at": now, "open_by_tier": counts, "nearest_deadlines": urgent}
