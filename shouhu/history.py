"""A running system's history for planning: `shouhu export-history` writes it, `shouhu plan --history` reads it.

Why an offline export in the composition root, not a dispatcher route: planning needs facts from three
services' tables (the dispatcher's tasks and visits, the callcenter's call attempts), and only `shouhu/` may
read across owners; an admin runs it against the database (DATABASE_URL, or `shouhu up`'s embedded server) in
one read-only, repeatable-read transaction, so it can run beside a live system and never changes a row.

The file is JSON Lines (UTF-8), one JSON object a line:

- line 1, the header: {"format": "shouhu-history", "version": 1, "exported_at", "since", "until", "tz"}:
  the window [since, until) the tasks were created in (ISO 8601, UTC), and the local time zone the hours of
  the day are counted in (Asia/Shanghai);
- then one line per task created in the window, oldest first:
  - `created_at` (ISO 8601, UTC), `tier` (high|medium|low: the task's tier now), `region_code` (the district);
  - `seat_call` (bool): an operator call job was queued for it (the dispatcher's own count of them, in
    tasks.attempts, since finished jobs are deleted), or a seat called;
  - `seat_calls`: each seat call placed, oldest first: `after_s` (seconds from the task's creation to the
    click-to-call) and `talk_s` (from the seat's phone picking up, call_attempts.answered_at, to the call's
    final status; null when not answered or not ended);
  - `visit` (bool): an in-person visit was requested;
  - `visits`: each visit, oldest first: `after_s` (task creation to the request), `wait_s` (request to an
    officer's claim; null when unclaimed), `busy_s` (claim to report: the way there and the visit; null
    when not reported), `outcome`;
  - `closed_after_s` (null when open), `breached` (bool), `outcome`.

Nothing personal is written: no phone number, name, ID number, note or key, and no task id either (it would
join the file back to the citizen in the database). Times are the services' clock (a fast-clock demo or
simulation exports its own clock's day).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from shared.clock import LOCAL_TZ

FORMAT = "shouhu-history"
VERSION = 1

_TASKS_SQL = """
SELECT t.created_at, t.tier, t.region_code, t.closed_at, t.breached, t.outcome,
  CASE WHEN jsonb_typeof(t.attempts -> 'operator_call') = 'number'
       THEN (t.attempts ->> 'operator_call')::numeric::int ELSE 0 END AS seat_jobs,
  CASE WHEN jsonb_typeof(t.attempts -> 'visit') = 'number'
       THEN (t.attempts ->> 'visit')::numeric::int ELSE 0 END AS visit_jobs,
  (SELECT coalesce(json_agg(json_build_object(
       'after_s', extract(epoch FROM c.created_at - t.created_at),
       'talk_s', CASE WHEN c.answered_at IS NOT NULL AND c.status = ANY($3::text[])
                      THEN extract(epoch FROM c.updated_at - c.answered_at) END)
     ORDER BY c.created_at), '[]'::json)
   FROM call_attempts c WHERE c.task_id = t.id AND c.channel = 'operator_call') AS seat_calls,
  (SELECT coalesce(json_agg(json_build_object(
       'after_s', extract(epoch FROM v.requested_at - t.created_at),
       'wait_s', extract(epoch FROM v.claimed_at - v.requested_at),
       'busy_s', extract(epoch FROM v.reported_at - v.claimed_at),
       'outcome', v.outcome)
     ORDER BY v.requested_at), '[]'::json)
   FROM visits v WHERE v.task_id = t.id) AS visits
FROM tasks t
WHERE t.created_at >= $1 AND t.created_at < $2
ORDER BY t.created_at, t.id
"""


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at is not None else None


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def task_line(row: Any) -> dict[str, Any]:
    """One task's line of the file, from its row (the query above)."""
    seat_calls = [{"after_s": _seconds(c["after_s"]), "talk_s": _seconds(c["talk_s"])}
                  for c in json.loads(row["seat_calls"])]
    visits = [{"after_s": _seconds(v["after_s"]), "wait_s": _seconds(v["wait_s"]), "busy_s": _seconds(v["busy_s"]),
               "outcome": v["outcome"]} for v in json.loads(row["visits"])]
    closed = row["closed_at"]
    return {"created_at": _iso(row["created_at"]), "tier": row["tier"], "region_code": row["region_code"],
            "seat_call": row["seat_jobs"] > 0 or bool(seat_calls), "seat_calls": seat_calls,
            "visit": row["visit_jobs"] > 0 or bool(visits), "visits": visits,
            "closed_after_s": _seconds((closed - row["created_at"]).total_seconds()) if closed else None,
            "breached": bool(row["breached"]), "outcome": row["outcome"]}


async def export(database_url: str, out: IO[str], *, since: datetime | None = None, until: datetime | None = None,
                 now: datetime | None = None) -> int:
    """Write the history of tasks created in [since, until) to `out`; returns how many tasks were written.

    Defaults: since the local midnight before the first task, until now (the services' clock) or just after the
    last task, whichever is later (a fast clock runs ahead of the real one)."""
    from services.callcenter.calls.models import FINAL_STATES  # a final attempt's updated_at is the call's end
    from shared.db import raw_connect

    conn = await raw_connect(database_url)
    try:
        # Read-only and one snapshot: the header's window and the rows agree, and a live system is not disturbed.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            first, last = await conn.fetchrow(
                "SELECT min(created_at), max(created_at) FROM tasks WHERE created_at >= $1 AND created_at < $2",
                since or datetime.min.replace(tzinfo=UTC), until or datetime.max.replace(tzinfo=UTC))
            if since is None:
                start = (first or now or datetime.now(UTC)).astimezone(LOCAL_TZ)
                since = start.replace(hour=0, minute=0, second=0, microsecond=0)
            if until is None:
                until = max(now or datetime.now(UTC), last + timedelta(seconds=1) if last else since)
            header = {"format": FORMAT, "version": VERSION, "exported_at": _iso(now or datetime.now(UTC)),
                      "since": _iso(since), "until": _iso(until), "tz": str(LOCAL_TZ)}
            out.write(json.dumps(header) + "\n")
            written = 0
            async for row in conn.cursor(_TASKS_SQL, since, until, list(FINAL_STATES), prefetch=2000):
                out.write(json.dumps(task_line(row), ensure_ascii=False) + "\n")
                written += 1
            return written
    finally:
        await conn.close()


# ---- reading it back, and what planning derives from it ------------------------------------------------------


@dataclass
class History:
    """A history file's window; its tasks are read as they are needed (a month of a province is ~900,000 lines)."""

    path: Path
    since: datetime
    until: datetime

    def tasks(self) -> Iterator[dict[str, Any]]:
        lines = iter_lines(self.path)
        next(lines, None)  # the header
        yield from lines


def read(path: Path | str) -> History:
    """The file written by `export` (ValueError when it is not one): its header, checked."""
    try:
        header = next(iter_lines(path), None)
    except ValueError as exc:  # not JSON at all
        raise ValueError(f"{path}: not a {FORMAT} file ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (its first line must be the header)")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: version {header.get('version')}; this shouhu reads version {VERSION}")
    return History(path=Path(path), since=datetime.fromisoformat(header["since"]),
                   until=datetime.fromisoformat(header["until"]))


def covered_hours(since: datetime, until: datetime) -> list[float]:
    """How many hours of each local hour of the day 0..23 the window [since, until) covers (edges in fractions)."""
    covered = [0.0] * 24
    at = since.astimezone(LOCAL_TZ)
    end = until.astimezone(LOCAL_TZ)
    while at < end:
        hour_end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step_end = min(hour_end, end)
        covered[at.hour] += (step_end - at).total_seconds() / 3600
        at = step_end
    return covered


@dataclass
class Derived:
    """What a history says about the workload, and what had to come from the default scenario instead."""

    tasks: int
    days: float
    per_day: float
    hourly_rate: list[float]          # tasks per hour, per local hour of the day
    seat_rate: list[float]            # tasks needing a seat call, per hour
    visit_rate: list[float]           # tasks needing a visit, per hour
    tier_mix: dict[str, float]
    seat_share: float
    visit_share: float
    high_seat_share: float
    high_visit_share: float
    seat_talk_s: float | None         # mean talk time of the answered seat calls
    seat_talk_calls: int
    visit_busy_s: float | None        # mean claim-to-report time of the reported visits
    visits_reported: int
    districts: int
    high_in_time_pct: float | None    # the history's own figure, for comparison
    fallbacks: list[str] = field(default_factory=list)


def derive(history: History, base: Any) -> Derived:
    """Rates and shares from the history, in one pass over its tasks; `base` (a Scenario, the default one)
    fills what the history lacks."""
    covered = covered_hours(history.since, history.until)
    days = sum(covered) / 24
    counts, seat_counts, visit_counts = [0] * 24, [0] * 24, [0] * 24
    tiers: Counter[str] = Counter()
    districts: set[str] = set()
    high = high_seat = high_visit = high_decided = high_in_time = 0
    talk_sum_s = busy_sum_s = 0.0
    talks = visits_reported = 0
    for t in history.tasks():
        hour = datetime.fromisoformat(t["created_at"]).astimezone(LOCAL_TZ).hour
        counts[hour] += 1
        seat_counts[hour] += bool(t["seat_call"])
        visit_counts[hour] += bool(t["visit"])
        tiers[t["tier"]] += 1
        districts.add(t["region_code"])
        for call in t["seat_calls"]:
            if call.get("talk_s") is not None:
                talk_sum_s += call["talk_s"]
                talks += 1
        for visit in t["visits"]:
            if visit.get("busy_s") is not None:
                busy_sum_s += visit["busy_s"]
                visits_reported += 1
        if t["tier"] == "high":
            high += 1
            high_seat += bool(t["seat_call"])
            high_visit += bool(t["visit"])
            if t["closed_after_s"] is not None or t["breached"]:
                high_decided += 1
                # 2 hours: the high tier's deadline (the domain's, which the default policy applies)
                high_in_time += not t["breached"] and t["closed_after_s"] is not None and t["closed_after_s"] <= 7200
    fallbacks: list[str] = []
    n = sum(counts)
    seat_share = sum(seat_counts) / n if n else 0.0
    visit_share = sum(visit_counts) / n if n else 0.0
    hourly_rate = [counts[h] / covered[h] if covered[h] else None for h in range(24)]
    seat_rate = [seat_counts[h] / covered[h] if covered[h] else None for h in range(24)]
    visit_rate = [visit_counts[h] / covered[h] if covered[h] else None for h in range(24)]
    missing = [h for h in range(24) if hourly_rate[h] is None]
    if missing:
        # Hours the window never covered: the default profile's shape, at the level of the hours it did cover.
        weights = base.hourly_profile
        seen = sum(weights[h] for h in range(24) if h not in missing)
        level = sum(r for r in hourly_rate if r is not None) / seen if seen else 0.0
        for h in missing:
            hourly_rate[h] = weights[h] * level
            seat_rate[h] = hourly_rate[h] * seat_share
            visit_rate[h] = hourly_rate[h] * visit_share
        fallbacks.append(f"hours {_hours(missing)} not in the history's window: the default profile's shape")
    if n:
        tier_mix = {tier: tiers.get(tier, 0) / n for tier in ("high", "medium", "low")}
    else:
        tier_mix = dict(base.tier_mix)
        fallbacks.append("no tasks: the default tier mix")
    return Derived(
        tasks=n, days=days, per_day=sum(r or 0.0 for r in hourly_rate),
        hourly_rate=[r or 0.0 for r in hourly_rate], seat_rate=[r or 0.0 for r in seat_rate],
        visit_rate=[r or 0.0 for r in visit_rate], tier_mix=tier_mix, seat_share=seat_share, visit_share=visit_share,
        high_seat_share=high_seat / high if high else seat_share,
        high_visit_share=high_visit / high if high else visit_share,
        seat_talk_s=talk_sum_s / talks if talks else None, seat_talk_calls=talks,
        visit_busy_s=busy_sum_s / visits_reported if visits_reported else None, visits_reported=visits_reported,
        districts=len(districts) or base.districts,
        high_in_time_pct=round(100 * high_in_time / high_decided, 2) if high_decided else None,
        fallbacks=fallbacks)


def _hours(hours: list[int]) -> str:
    """Hours of the day as runs: [0, 1, 2, 5] -> "00-03h, 05-06h"."""
    runs: list[list[int]] = []
    for h in hours:
        if runs and runs[-1][1] == h - 1:
            runs[-1][1] = h
        else:
            runs.append([h, h])
    return ", ".join(f"{a:02d}-{b + 1:02d}h" for a, b in runs)


def workload(d: Derived, base: Any) -> tuple[Any, Any, list[str]]:
    """The equivalent scenario (the base's shifts, target and clock; the history's volume, profile, tier mix,
    districts and times), the plan's workload from the history's own hourly seat calls and visits, and the
    lines that say what was derived from what, and what fell back to the default scenario."""
    from shouhu.plan import Workload

    notes = list(d.fallbacks)
    if d.seat_talk_s is not None:
        handle_s = d.seat_talk_s
    else:
        handle_s = base.seats.handle_s
        notes.append(f"no answered seat call in the history: the default talk time, {handle_s:g} s")
    # Not in the database: the seats' wrap-up (a setting, not a per-call record) and the officer's way back
    # (a visit ends at its report).
    notes.append(f"seat wrap-up not recorded: the default scenario's {base.seats.wrap_up_s:g} s")
    if d.visit_busy_s is not None:
        officer_busy_s = d.visit_busy_s + base.officers.travel_s
        notes.append(f"officer's way back not recorded: the default scenario's {base.officers.travel_s:g} s"
                     " added to the claim-to-report time")
    else:
        officer_busy_s = 2 * base.officers.travel_s + base.officers.visit_s
        notes.append(f"no reported visit in the history: the default officer time, {officer_busy_s:g} s"
                     " (travel both ways + visit)")
    total = sum(d.hourly_rate)
    # hourly_profile must have some weight; an empty history plans for nothing (every hour 0 seat calls).
    profile = [r / total for r in d.hourly_rate] if total > 0 else list(base.hourly_profile)
    scenario = base.model_copy(update={
        "name": "history", "warnings_per_day": max(1, round(d.per_day)), "hourly_profile": profile, "bursts": [],
        "tier_mix": d.tier_mix, "districts": d.districts,
        "seats": base.seats.model_copy(update={"handle_s": handle_s}),
        "officers": base.officers.model_copy(update={"visit_s": max(0.0, officer_busy_s - 2 * base.officers.travel_s)}),
    })
    demand = [{"hour": h, "warnings": d.hourly_rate[h], "seat_calls": d.seat_rate[h], "visits": d.visit_rate[h]}
              for h in range(24)]
    work = Workload(demand=demand, seat_handle_s=handle_s + base.seats.wrap_up_s, officer_busy_s=officer_busy_s,
                    districts=d.districts, high_seat_share=d.high_seat_share, high_visit_share=d.high_visit_share)
    return scenario, work, notes


def describe_source(d: Derived, notes: list[str], *, path: Path | str) -> list[str]:
    """The plan's first lines for a history: what was derived, from how many days and tasks."""
    mix = ", ".join(f"{tier} {share:.0%}" for tier, share in d.tier_mix.items())
    talk = f"{d.seat_talk_s:.0f} s mean talk over {d.seat_talk_calls:,} answered seat calls" \
        if d.seat_talk_s is not None else "no answered seat call"
    busy = f"{d.visit_busy_s:.0f} s mean claim-to-report over {d.visits_reported:,} visits" \
        if d.visit_busy_s is not None else "no reported visit"
    peak = max(range(24), key=lambda h: d.hourly_rate[h])
    own = f"; its own high tier in time: {d.high_in_time_pct:.2f}%" if d.high_in_time_pct is not None else ""
    lines = [f"History {path}: derived from {d.tasks:,} tasks over {d.days:.2f} days"
             f" ({d.per_day:,.0f} tasks a day, busiest hour {peak:02d}:00 at {d.hourly_rate[peak]:,.1f} an hour),"
             f" {d.districts} districts.",
             f"  tiers {mix}; {d.seat_share:.1%} needed a seat call, {d.visit_share:.1%} a visit"
             f" (high tier: {d.high_seat_share:.1%}, {d.high_visit_share:.1%}); {talk}; {busy}{own}."]
    lines += [f"  from the default scenario: {note}" for note in notes]
    return lines


def iter_lines(path: Path | str) -> Iterator[dict[str, Any]]:
    """Every line of a history file, header first (for checks and tools)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
