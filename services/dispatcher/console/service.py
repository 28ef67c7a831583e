"""Queries behind the supervisor console's pages (read-only unless named otherwise). Callers own the session."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.emergencies.models import PaymentStop
from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.reports.service import daily_decided
from services.dispatcher.tasks import plan_view
from services.dispatcher.tasks import service as tasks
from services.dispatcher.visits import service as visits
from shared.clock import LOCAL_TZ
from shared.contracts import bot as bot_contract
from shared.contracts import callcenter as callcenter_contract
from shared.sql import sql


def local_day_start(now: datetime, days_back: int = 0) -> datetime:
    """Local midnight `days_back` days before today's."""
    today = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_back)


async def daily_compliance(session: AsyncSession, *, unit: str, now: datetime, days: int) -> list[dict[str, Any]]:
    """Per local day, the last `days` days up to now: tasks decided that day (closed in time that day, or breached
    when their deadline passed that day), how many in time, breached, the rate (reports.service: the rule)."""
    start = local_day_start(now, days - 1)
    rows = await daily_decided(session, unit=unit, from_=start, now=now, tz=str(LOCAL_TZ))
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).date()
        row = rows.get(day)
        decided = row.decided if row else 0
        in_time = row.in_time if row else 0
        out.append({"day": day, "label": day.strftime("%m-%d"), "due": decided, "in_time": in_time,
                    "breached": decided - in_time, "rate": round(in_time / decided, 4) if decided else None})
    return out


# A task is the supervisor's when the citizen's region or the unit it was handed to lies in their unit.
_VISIBLE = "(t.region_code LIKE :unit OR t.assigned_unit LIKE :unit)"

# Who worked the task last: the newest entry by a person, a seat, a channel or a citizen; not the timers, and not
# the upstream system whose warning opened or joined it (it reported the task, nobody worked it yet). And when the
# timer marked it breached. Both read on ix_audit_log_task_id (task_id, seq).
_RESPONSIBLE = (
    " LEFT JOIN LATERAL (SELECT a.actor, a.action, a.at FROM audit_log a WHERE a.task_id = t.id"
    "   AND a.actor NOT LIKE 'system:%'"
    "   AND a.action NOT IN ('task.created', 'warning.merged', 'warning.joined_from_other_unit')"
    "   ORDER BY a.seq DESC LIMIT 1) w ON true"
    " LEFT JOIN LATERAL (SELECT a.at FROM audit_log a WHERE a.task_id = t.id AND a.action = 'task.breached'"
    "   ORDER BY a.seq LIMIT 1) b ON true"
)


def _queue_sql(*, tier: bool, within: bool, closed_since: bool) -> Any:
    where = ["(t.status <> 'closed' AND (t.breached OR t.escalated_at IS NOT NULL))"]
    if closed_since:
        # Also the breaches already closed (late) whose deadline passed since then: who let them slip.
        where.append("(t.status = 'closed' AND t.breached AND t.due_at >= :closed_since)")
    filters = ["(" + " OR ".join(where) + ")", _VISIBLE]
    if tier:
        filters.append("t.tier = :tier")
    if within:
        filters.append("(t.region_code LIKE :within OR t.assigned_unit LIKE :within)")
    return sql(
        "SELECT t.id, t.case_id, t.tier, t.status, t.due_at, t.breached, t.escalated_at, t.region_code,"
        " t.assigned_unit, t.reassigned_at, t.fraud_type, t.attempts, t.closed_at, t.outcome,"
        " w.actor AS last_actor, w.action AS last_action, w.at AS last_at, b.at AS breached_at"
        " FROM tasks t" + _RESPONSIBLE + " WHERE " + " AND ".join(filters) +
        # Open and undecided first (no reassignment since it was escalated), then breaches, then the nearest deadline.
        " ORDER BY t.status = 'closed', (t.reassigned_at IS NOT NULL AND t.reassigned_at >= t.escalated_at),"
        " t.breached DESC, t.due_at LIMIT :limit"
    )


async def escalation_queue(session: AsyncSession, *, unit: str, tier: str | None = None, within: str | None = None,
                           closed_since: datetime | None = None, limit: int = 200) -> list[Any]:
    """Open tasks escalated to a supervisor or past their deadline (what needs a decision), and with
    `closed_since` the breaches closed late whose deadline passed since then; each with who worked it last
    and when it breached. `within`: a unit inside `unit` (the task's region or the unit it was handed to)."""
    params: dict[str, Any] = {"unit": unit + "%", "limit": limit}
    if tier:
        params["tier"] = tier
    if within:
        params["within"] = within + "%"
    if closed_since:
        params["closed_since"] = closed_since
    statement = _queue_sql(tier=bool(tier), within=bool(within), closed_since=closed_since is not None)
    return list((await session.execute(statement, params)).all())


async def task_file(session: AsyncSession, *, unit: str, task_id: Any, store: PolicyStore,
                    now: datetime) -> dict[str, Any] | None:
    """Everything about one task and its case, for the case page; None when it is outside `unit`.

    Besides the records: who the citizen is (the latest name, age, gender given), what was already tried (the
    officers' list, visits.service.tried), the plan with its owners and times (tasks.plan_view), the time left
    and the outcomes a person may record now (tasks.service.outcomes_allowed).
    """
    task = (await session.execute(
        sql("SELECT t.*, c.status AS case_status, c.warning_count, c.first_warning_at, c.created_at AS case_created_at"
            " FROM tasks t JOIN cases c ON c.id = t.case_id WHERE t.id = :id AND " + _VISIBLE),
        {"id": task_id, "unit": unit + "%"})).first()
    if task is None:
        return None
    warnings = (await session.execute(
        sql("SELECT received_at, occurred_at, source, source_ref, signal, fraud_type, tier, amount_at_risk, risk_score,"
            " reasons, merged FROM warnings WHERE case_id = :c ORDER BY received_at"), {"c": task.case_id})).all()
    # The channels' own records, read through what each service offers (shared/contracts).
    calls = await callcenter_contract.calls_for_task(session, task.id)
    messages = await bot_contract.alert_deliveries(session, task.id)
    entries = (await session.execute(
        sql("SELECT seq, at, actor, action, body, hash FROM audit_log WHERE case_id = :c ORDER BY seq"),
        {"c": task.case_id})).all()
    timeline: list[tuple[Any, str, Any]] = [(w.received_at, "warning", w) for w in warnings]
    timeline += [(c.created_at, "call", c) for c in calls]
    timeline += [(m.created_at, "message", m) for m in messages]
    timeline += [(e.at, "audit", e) for e in entries]
    timeline.sort(key=lambda item: item[0])
    facts = (await visits.case_facts(session, [task.case_id]))[task.case_id]
    return {"task": task, "warnings": warnings, "calls": calls, "messages": messages, "audit": entries,
            "timeline": timeline, "payment_stop": await session.get(PaymentStop, task.id),
            "subject": facts.subject, "amount_at_risk": facts.amount_at_risk,
            "tried": await visits.tried(session, task.id),
            "plan": await plan_view.task_plan(session, task, store=store, now=now),
            "time_left": plan_view.time_left(task, now), "outcomes": tasks.outcomes_allowed(task)}

