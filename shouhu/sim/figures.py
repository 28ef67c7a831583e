"""The day's figures, read from the database the services wrote (tasks, deliveries, calls, visits, payment stops),
not from the simulator's own bookkeeping: a warning the simulator sent but the system lost shows up here.

Percentages are 0-100, occupancy a fraction 0-1, times in seconds on the services' clock.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

# Why a task missed its deadline, in words (Chinese first: the report's default language).
CAUSES = {
    "never_attempted": ("从未联系", "never contacted (no alert sent, no call placed)"),
    "never_reached_no_visit": ("未接通且未派警", "never reached, no visit requested"),
    "visit_waiting": ("见面任务无人接单", "visit requested, no officer free"),
    "visit_under_way": ("民警在途", "officer still on the way"),
    "visit_not_found": ("上门未见到本人", "officer did not find the citizen"),
    "emergency_open": ("止付未完成", "payment stop not finished"),
    "reached_not_closed": ("已接通未闭环", "reached, loop not closed"),
    "closed_late": ("超时办结", "closed after the deadline"),
    "closed_late_officer_wait": ("超时办结（见面任务等民警超过 30 分钟）",
                                 "closed after the deadline: a visit waited over 30 minutes for an officer"),
    "closed_unreachable": ("坐席未接通即结案，未派警", "closed as unreachable by a seat, no visit followed"),
}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def collect(db: Any, *, source_refs: list[str], day_start: datetime, end: datetime) -> dict[str, Any]:
    """Every figure of the day from the database; `end` is the services' clock when the run stopped."""
    sent = len(source_refs)
    with_task = (await db.fetch(
        "SELECT count(*) AS n FROM warnings w JOIN tasks t ON t.id = w.task_id WHERE w.source_ref = ANY($1::text[])",
        source_refs))[0]["n"]
    tasks = await db.fetch(
        "SELECT t.id, t.tier, t.region_code, t.created_at, t.due_at, t.closed_at, t.outcome, t.reached_at,"
        " t.emergency_at, t.status,"
        " (SELECT min(b.sent_at) FROM bot_deliveries b WHERE b.task_id = t.id) AS first_alert_at,"
        " (SELECT min(c.created_at) FROM call_attempts c WHERE c.task_id = t.id) AS first_call_at,"
        " (SELECT min(c.created_at) FROM call_attempts c WHERE c.task_id = t.id AND c.channel = 'operator_call')"
        "   AS first_seat_call_at,"
        " (SELECT min(v.met_at) FROM visits v WHERE v.task_id = t.id) AS met_at,"
        # A person met: the dispatcher's reached_at, unless it was set by a seat's "call back later" after an
        # unanswered call (same instant as the callback's audit entry), a visit's meeting, or a closing outcome
        # only a person gives.
        " LEAST(CASE WHEN NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.task_id = t.id"
        "   AND a.action = 'task.callback_scheduled' AND a.at = t.reached_at) THEN t.reached_at END,"
        "  (SELECT min(v.met_at) FROM visits v WHERE v.task_id = t.id),"
        "  CASE WHEN t.outcome IN ('acknowledged', 'dissuaded', 'loss_reported', 'refused', 'false_positive')"
        "   THEN t.closed_at END) AS human_at,"
        " (SELECT array_agg(v.status || ':' || coalesce(v.outcome, '')) FROM visits v WHERE v.task_id = t.id)"
        "   AS visits,"
        # The longest a visit of this task waited for an officer to take it (to the run's end if nobody did).
        " (SELECT max(extract(epoch FROM coalesce(v.claimed_at, v.cancelled_at, $1) - v.requested_at))"
        "   FROM visits v WHERE v.task_id = t.id) AS visit_wait_max_s"
        " FROM tasks t", end)
    figures: dict[str, Any] = {"sim_warnings_sent": sent, "sim_warnings_lost": sent - with_task,
                               "sim_tasks": len(tasks)}
    first_attempt: dict[str, list[float]] = defaultdict(list)
    first_human: dict[str, list[float]] = defaultdict(list)
    decided: Counter[str] = Counter()
    in_time: Counter[str] = Counter()
    undecided: Counter[str] = Counter()
    never_reached: Counter[str] = Counter()
    breaches: list[dict[str, Any]] = []
    by_hour: dict[int, Counter[str]] = defaultdict(Counter)
    for t in tasks:
        tier = t["tier"]
        # Handled: the loop closed (闭环) with an outcome by the deadline. "unreachable" counts: it is also what a
        # seat's "wrong number" (the citizen says it is not them) becomes; sim_closed_unreachable counts them apart.
        closed_in_time = t["closed_at"] is not None and t["closed_at"] <= t["due_at"]
        hour = int((t["created_at"] - day_start).total_seconds() // 3600)
        by_hour[hour][f"{tier}_warnings"] += 1
        if closed_in_time or t["due_at"] <= end:
            decided[tier] += 1
            in_time[tier] += closed_in_time
            by_hour[hour][f"{tier}_decided"] += 1
            by_hour[hour][f"{tier}_in_time"] += closed_in_time
            if not closed_in_time:
                breaches.append({"task_id": str(t["id"]), "tier": tier, "region_code": t["region_code"],
                                 "cause": breach_cause(t)})
        else:
            undecided[tier] += 1
        attempts = [a for a in (t["first_alert_at"], t["first_call_at"]) if a is not None]
        if attempts:
            first_attempt[tier].append(max(0.0, (min(attempts) - t["created_at"]).total_seconds()))
        if t["human_at"] is not None:
            first_human[tier].append(max(0.0, (t["human_at"] - t["created_at"]).total_seconds()))
        else:
            never_reached[tier] += 1
    for tier in ("high", "medium", "low"):
        figures[f"sim_{tier}_tasks"] = decided[tier] + undecided[tier]
        figures[f"sim_{tier}_decided"] = decided[tier]
        figures[f"sim_{tier}_in_time_pct"] = round(100 * in_time[tier] / decided[tier], 2) if decided[tier] else None
        figures[f"sim_{tier}_not_yet_due"] = undecided[tier]
        for name, values in (("first_attempt", first_attempt[tier]), ("first_human", first_human[tier])):
            for p in (50, 95):
                value = percentile(values, p)
                figures[f"sim_{name}_p{p}_s_{tier}"] = round(value, 1) if value is not None else None
        figures[f"sim_never_reached_{tier}"] = never_reached[tier]
    # The names: high tier.
    figures["sim_first_attempt_p95_s"] = figures["sim_first_attempt_p95_s_high"]
    figures["sim_first_attempt_p50_s"] = figures["sim_first_attempt_p50_s_high"]
    figures["sim_first_human_p95_s"] = figures["sim_first_human_p95_s_high"]
    figures["sim_first_human_p50_s"] = figures["sim_first_human_p50_s_high"]
    figures["sim_breaches"] = len(breaches)
    causes = Counter(b["cause"] for b in breaches)
    figures["sim_breach_causes"] = dict(causes.most_common())
    by_district: dict[str, Counter[str]] = defaultdict(Counter)
    for b in breaches:
        by_district[b["region_code"]][b["cause"]] += 1
    figures["sim_breaches_by_district"] = {d: dict(c) for d, c in sorted(by_district.items(),
                                                                        key=lambda kv: -sum(kv[1].values()))}
    visits = await db.fetch("SELECT status, outcome, count(*) AS n FROM visits GROUP BY status, outcome")
    figures["sim_visits_requested"] = sum(r["n"] for r in visits)
    figures["sim_visits_completed"] = sum(r["n"] for r in visits if r["status"] == "reported")
    figures["sim_visits_by_outcome"] = {f"{r['status']}:{r['outcome'] or ''}": r["n"] for r in visits}
    stops = await db.fetch("SELECT status, count(*) AS n FROM payment_stops GROUP BY status")
    figures["sim_emergencies"] = sum(1 for t in tasks if t["emergency_at"] is not None)
    figures["sim_payment_stops"] = {r["status"]: r["n"] for r in stops}
    outcomes = Counter(t["outcome"] or "open" for t in tasks)
    figures["sim_closed_unreachable"] = outcomes.get("unreachable", 0)
    figures["sim_outcomes"] = dict(outcomes.most_common())
    calls = await db.fetch("SELECT channel, count(*) AS n FROM call_attempts GROUP BY channel")
    figures["sim_calls"] = {r["channel"]: r["n"] for r in calls}
    alerts = await db.fetch("SELECT count(*) AS n FROM bot_deliveries WHERE sent_at IS NOT NULL")
    figures["sim_alerts_sent"] = alerts[0]["n"]
    # What one day leaves in the database (docs/scale.md scales these to the country).
    sizes = await db.fetch("SELECT (SELECT count(*) FROM audit_log) AS audit_rows, (SELECT count(*) FROM warnings)"
                           " AS warning_rows, pg_database_size(current_database()) AS db_bytes")
    figures["sim_audit_rows"] = sizes[0]["audit_rows"]
    figures["sim_db_bytes"] = sizes[0]["db_bytes"]
    figures["sim_by_hour"] = [{"hour": h, **dict(c)} for h, c in sorted(by_hour.items())]
    return figures


# A visit request an officer has not taken within this long is the officers' shortfall, not the citizen's
# (the scenario's plan target: an officer leaves within 30 minutes of a request).
OFFICER_WAIT_S = 1800


def breach_cause(t: Any) -> str:
    """The first reason, in the pipeline's order, that this task was not closed by its deadline."""
    if t["closed_at"] is not None:
        if (t.get("visit_wait_max_s") or 0) > OFFICER_WAIT_S:
            return "closed_late_officer_wait"
        return "closed_late"
    if t["emergency_at"] is not None:
        return "emergency_open"
    visits = t["visits"] or []
    if t["human_at"] is not None and not visits:
        return "reached_not_closed"
    if t["first_alert_at"] is None and t["first_call_at"] is None and not visits:
        return "never_attempted"
    if not visits:
        return "never_reached_no_visit"
    statuses = [v.split(":", 1) for v in visits]
    if any(s == "reported" and o == "not_found" for s, o in statuses):
        return "visit_not_found"
    if any(s == "claimed" for s, _ in statuses):
        return "visit_under_way"
    return "visit_waiting"


def bottleneck(figures: dict[str, Any], targets: dict[str, float]) -> tuple[str, str]:
    """The bottleneck in words (Chinese, English): the first target missed, with the cause that explains it."""
    high = figures.get("sim_high_in_time_pct")
    attempt = figures.get("sim_first_attempt_p95_s")
    human = figures.get("sim_first_human_p95_s")
    occupancy = figures.get("sim_seat_occupancy") or 0
    causes = figures.get("sim_breach_causes") or {}
    top = next(iter(causes), None)
    if figures.get("sim_warnings_lost"):
        return ("预警丢失：有预警未生成任务，先查接收链路。",
                "Warnings lost: some sent warnings have no task; the ingest path comes first.")
    if occupancy > targets["seat_occupancy"]:
        return (f"坐席不足：坐席占用率 {occupancy:.0%}，高于 {targets['seat_occupancy']:.0%}，人工外呼排队。",
                f"Seats: occupancy {occupancy:.0%} is above {targets['seat_occupancy']:.0%}; operator calls queue.")
    if attempt is not None and attempt > targets["first_attempt_p95_s"]:
        real = figures.get("sim_first_attempt_p95_real_s")
        scale = (figures.get("sim_scenario") or {}).get("time_scale", 1)
        real_zh = f"，即本机实际 {real:.1f} 秒（快钟 ×{scale:g} 把服务自身的秒级延迟放大了同样倍数）" if real is not None else ""
        real_en = (f", {real:.1f} s of real time on this machine (the x{scale:g} clock multiplies the services' own"
                   " latency by as much)") if real is not None else ""
        return (f"首次触达慢：高风险首次联系尝试 p95 为 {attempt:.0f} 秒（目标 {targets['first_attempt_p95_s']:.0f} 秒）"
                f"{real_zh}；高峰时外呼速率（每秒呼叫数）跟不上预警到达。",
                f"First contact: the high tier's first attempt p95 is {attempt:.0f} s (target "
                f"{targets['first_attempt_p95_s']:.0f} s){real_en}; at the peak the outbound call rate (calls per"
                " second) cannot keep up with the arriving warnings.")
    if high is not None and high < targets["high_in_time_pct"] and top:
        zh, en = CAUSES[top]
        return (f"高风险按时处置率 {high:.1f}%（目标 {targets['high_in_time_pct']:.0f}%）；超时主因：{zh}。",
                f"High tier handled in time {high:.1f}% (target {targets['high_in_time_pct']:.0f}%); the main cause of"
                f" breaches: {en}.")
    if human is not None and human > targets["first_human_p95_s"]:
        return (f"人工接通慢：高风险首次人工接触 p95 为 {human / 60:.0f} 分钟。",
                f"Human contact: the high tier's first human contact p95 is {human / 60:.0f} min.")
    if top:
        zh, en = CAUSES[top]
        return (f"各项目标均达到；剩余超时的主因：{zh}。", f"Every target met; the remaining breaches are mostly: {en}.")
    return ("各项目标均达到，未发现瓶颈。", "Every target met; no bottleneck found.")


TARGETS = {"high_in_time_pct": 99.0, "first_attempt_p95_s": 30.0, "first_human_p95_s": 1800.0,
           "seat_occupancy": 0.85}
