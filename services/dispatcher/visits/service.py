"""Field visits: create, claim, cancel, escalate, list, and what an officer needs to know before going.

Callers own the transaction; every change is audited here, on the task's
timeline. A report, which also moves the task, is in flows.py.

Locks, in the order every writer takes them: the case and the task
(tasks.service.lock_task), then the visit. A claim locks only the visit, so it
never waits for a task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.tasks.models import Task
from services.dispatcher.visits.models import CANCELLED, CLAIMED, LIVE, OPEN, REPORTED, Visit
from services.dispatcher.visits.schemas import SubjectOut, TriedOut, VisitDetail, VisitOut
from shared.audit import service as audit
from shared.auth.service import Principal
from shared.clock import LOCAL_TZ
from shared.contracts import VisitClaimCheck
from shared.contracts import bot as bot_contract
from shared.contracts import callcenter as callcenter_contract
from shared.ids import uuid7
from shared.metrics import TASK_EVENTS
from shared.queue.service import enqueue
from shared.sql import sql

SYSTEM = "system:dispatcher"


class VisitConflict(Exception):
    """The visit is not in a state that allows this step (someone else has it, it was reported, it was cancelled)."""


def unit_of(task: Task) -> str:
    """The unit whose officers go: the one a supervisor handed the task to, else the citizen's district."""
    return task.assigned_unit or task.region_code


def actor_name(actor: str | None) -> str:
    """'key:ab12cd:王警官' -> '王警官' (what people read); other actors as they are."""
    if actor and actor.startswith("key:"):
        return actor.split(":", 2)[-1]
    return actor or ""


def conflict_reason(visit: Visit) -> str:
    """Why a claim or report cannot go ahead, in a sentence naming who has the visit."""
    if visit.status == CLAIMED:
        when = visit.claimed_at.astimezone(LOCAL_TZ).strftime("%H:%M") if visit.claimed_at else "?"
        return f"the visit is already claimed by {actor_name(visit.claimed_by)} ({visit.claimed_by}) at {when}"
    if visit.status == REPORTED:
        return f"the visit was already reported ({visit.outcome}) by {actor_name(visit.claimed_by)}"
    if visit.status == CANCELLED:
        return "the visit was cancelled: its task is closed"
    return f"the visit is {visit.status}"


def record(session: AsyncSession, visit: Visit, *, at: datetime, actor: str, action: str, **body: Any) -> None:
    """An audit entry on the visit's task (its timeline)."""
    audit.record(session, at=at, actor=actor, action=action, task_id=visit.task_id, case_id=visit.case_id,
                 region_code=visit.region_code, visit_id=visit.id, **body)


# ---- reading and locking ---------------------------------------------------------------------------

async def live_visits(session: AsyncSession, task_id: uuid.UUID, *, lock: bool = False) -> list[Visit]:
    """The task's open or claimed visit (at most one, by the unique index), locked when asked."""
    query = select(Visit).where(Visit.task_id == task_id, Visit.status.in_(LIVE))
    if lock:
        # The session does not autoflush: write this transaction's own changes (a visit just reported)
        # before the re-read, which would otherwise bring back the row as it was.
        await session.flush()
        query = query.with_for_update().execution_options(populate_existing=True)
    return list((await session.execute(query)).scalars())


async def statuses(session: AsyncSession, task_id: uuid.UUID) -> list[str]:
    """The status of each of the task's visits, ever (open, claimed, reported, cancelled)."""
    return list((await session.execute(select(Visit.status).where(Visit.task_id == task_id))).scalars())


async def live_for_tasks(session: AsyncSession, task_ids: list[uuid.UUID]) -> list[Visit]:
    """The open or claimed visits of these tasks."""
    if not task_ids:
        return []
    return list((await session.execute(select(Visit).where(Visit.task_id.in_(task_ids),
                                                           Visit.status.in_(LIVE)))).scalars())


async def get_visible(session: AsyncSession, visit_id: uuid.UUID, principal: Principal, *,
                      lock: bool = False) -> Visit | None:
    """The visit when it lies in the key's unit, else None (another unit's visit does not exist for it).

    `lock`: FOR UPDATE, re-read (a claim racing another waits here, then sees the winner's row).
    """
    query = select(Visit).where(Visit.id == visit_id)
    if lock:
        await session.flush()  # as in live_visits
        query = query.with_for_update().execution_options(populate_existing=True)
    visit = (await session.execute(query)).scalar_one_or_none()
    if visit is None or not principal.covers(visit.unit):
        return None
    return visit


# ---- the life of a visit -----------------------------------------------------------------------------

async def create(session: AsyncSession, task: Task, *, actor: str, note: str | None, now: datetime,
                 request_attempt: int | None = None) -> tuple[Visit, bool]:
    """A visit for a locked, open task; the live one instead when there is one (True: created now).

    Every creator holds the task's lock, so two requests for one task are
    serialised; the partial unique index is the last guard. `request_attempt`:
    the plan's visit.request attempt, which makes its job create once.
    """
    live = await live_visits(session, task.id, lock=True)
    if live:
        return live[0], False
    if request_attempt is not None:
        same = (await session.execute(select(Visit).where(
            Visit.task_id == task.id, Visit.request_attempt == request_attempt))).scalar_one_or_none()
        if same is not None:
            return same, False
    visit = Visit(id=uuid7(), task_id=task.id, case_id=task.case_id, unit=unit_of(task), region_code=task.region_code,
                  status=OPEN, requested_by=actor, requested_at=now, note=note, request_attempt=request_attempt)
    session.add(visit)
    await session.flush()
    TASK_EVENTS.labels("visit_created").inc()
    record(session, visit, at=now, actor=actor, action="visit.created", unit=visit.unit, note=note,
            due_at=task.due_at, why=f"officers of unit {visit.unit} go and meet the citizen before the deadline")
    await _enqueue_claim_check(session, visit, now=now)
    return visit, True


async def _enqueue_claim_check(session: AsyncSession, visit: Visit, *, now: datetime) -> None:
    """Committed with the visit (or its hand-over): has an officer taken it in time? (check_claimed; the job
    waits on the clock for the tier's time.) One per visit while it is queued (the dedupe key)."""
    check = VisitClaimCheck.trusted(task_id=visit.task_id, visit_id=visit.id)
    await enqueue(session, [check.job(run_at=now, task_id=visit.task_id, dedupe_key=f"visit.claim_check:{visit.id}")],
                  now=now)


async def check_claimed(session: AsyncSession, task: Task, visit_id: uuid.UUID, *, claim_within_minutes: float | None,
                        now: datetime) -> datetime | None:
    """A visit of a locked task that no officer has taken `claim_within_minutes` after its request goes to a
    supervisor now (task and visit escalated, audited), not at the deadline. Returns when to look again, if
    that time has not come yet; None when there is nothing more to do (taken, ended, escalated, no limit)."""
    visit = (await session.execute(select(Visit).where(Visit.id == visit_id).with_for_update())).scalar_one_or_none()
    if visit is None or visit.status != OPEN or visit.escalated_at is not None or claim_within_minutes is None:
        return None
    due = (visit.handed_over_at or visit.requested_at) + timedelta(minutes=claim_within_minutes)
    if now < due:
        return due
    why = f"no officer of unit {visit.unit} took the visit within {claim_within_minutes:g} minutes of its request"
    visit.escalated_at = now
    record(session, visit, at=now, actor="system:timer", action="visit.escalated", to="supervisor",
            status=visit.status, claimed_by=None, why=why)
    TASK_EVENTS.labels("visit_escalated").inc()
    if task.escalated_at is None:
        task.escalated_at = now
        TASK_EVENTS.labels("escalated").inc()
        audit.record(session, at=now, actor="system:timer", action="task.escalated", task_id=task.id,
                     case_id=task.case_id, region_code=task.region_code, to="supervisor", why=why)
    return None


async def hand_over_open(session: AsyncSession, task: Task, *, to_unit: str, actor: str, now: datetime) -> int:
    """A supervisor handed a locked task to `to_unit`: its visit nobody has taken goes with it (a claimed one
    stays with the officer on the way). The new unit's officers see it at once and get the tier's full claim
    time from now, with a claim check of its own. Returns how many moved."""
    moved = 0
    for visit in await live_visits(session, task.id, lock=True):
        if visit.status != OPEN or visit.unit == to_unit:
            continue
        before = visit.unit
        visit.unit, visit.handed_over_at, visit.escalated_at = to_unit, now, None
        record(session, visit, at=now, actor=actor, action="visit.handed_over", before={"unit": before},
               after={"unit": to_unit}, why=f"the task was handed to unit {to_unit}; nobody had taken the visit")
        await _enqueue_claim_check(session, visit, now=now)
        moved += 1
    return moved


async def claim(session: AsyncSession, visit: Visit, principal: Principal, *, now: datetime) -> bool:
    """Take a locked visit for the caller (True: claimed now; False: it was theirs already).

    VisitConflict when another officer has it, or it was reported or cancelled.
    """
    if visit.status == CLAIMED and visit.claimed_key_id == principal.key_id:
        return False
    if visit.status != OPEN:
        raise VisitConflict(conflict_reason(visit))
    visit.status = CLAIMED
    visit.claimed_by = principal.actor
    visit.claimed_key_id = principal.key_id
    visit.claimed_at = now
    record(session, visit, at=now, actor=principal.actor, action="visit.claimed", unit=principal.unit,
            why="an officer is on the way")
    return True


async def cancel_live(session: AsyncSession, task: Task, *, outcome: str, now: datetime) -> int:
    """The task closed (any path): its open or claimed visit is called off. Returns how many."""
    cancelled = 0
    for visit in await live_visits(session, task.id, lock=True):
        visit.status = CANCELLED
        visit.cancelled_at = now
        record(session, visit, at=now, actor=SYSTEM, action="visit.cancelled", outcome=outcome,
                claimed_by=visit.claimed_by, why=f"the task closed ({outcome}): nobody needs to go")
        cancelled += 1
    return cancelled


async def escalate_overdue(session: AsyncSession, task: Task, *, now: datetime) -> int:
    """At the task's deadline, a visit still live goes on to a supervisor. Returns how many.

    Called from the task's breach step, which runs once at the deadline under the task's lock;
    a timer of the visit's own would have to follow every change of the deadline (a raised
    tier pulls it in), which the task's plan already does.
    """
    escalated = 0
    for visit in await live_visits(session, task.id, lock=True):
        if visit.escalated_at is not None:
            continue
        visit.escalated_at = now
        if visit.status == CLAIMED:
            why = (f"claimed by {actor_name(visit.claimed_by)} at {visit.claimed_at.astimezone(LOCAL_TZ):%H:%M}"  # type: ignore[union-attr]
                   " but not reported by the deadline")
        else:
            why = "no officer claimed the visit before the deadline"
        record(session, visit, at=now, actor="system:timer", action="visit.escalated", to="supervisor",
                status=visit.status, claimed_by=visit.claimed_by, why=why)
        TASK_EVENTS.labels("visit_escalated").inc()
        escalated += 1
    return escalated


# ---- what an officer reads ---------------------------------------------------------------------------

@dataclass(slots=True)
class CaseFacts:
    """What the warnings of a case say about the person and what is happening to them."""

    subject: SubjectOut = field(default_factory=SubjectOut)
    signals: list[str] = field(default_factory=list)
    amount_at_risk: Decimal | None = None


@dataclass(slots=True)
class VisitView:
    visit: Visit
    due_at: datetime
    tier: str
    task_status: str
    emergency_at: datetime | None
    fraud_type: str
    phone: str
    facts: CaseFacts


_WITH_TASK = (select(Visit, Task.due_at, Task.tier, Task.status, Task.emergency_at, Task.fraud_type, Task.phone)
              .join(Task, Task.id == Visit.task_id))


async def case_facts(session: AsyncSession, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, CaseFacts]:
    """Per case: the person (latest name, age, gender given), the signals (oldest first), the largest amount."""
    facts: dict[uuid.UUID, CaseFacts] = {c: CaseFacts() for c in case_ids}
    if not case_ids:
        return facts
    rows = (await session.execute(
        sql("SELECT case_id, subject, signal, amount_at_risk FROM warnings"
            " WHERE case_id = ANY(CAST(:ids AS uuid[])) ORDER BY received_at"), {"ids": case_ids})).all()
    for row in rows:
        f = facts[row.case_id]
        subject = row.subject or {}
        for key in ("name", "age", "gender"):
            if subject.get(key) is not None:
                setattr(f.subject, key, subject[key])
        if row.signal not in f.signals:
            f.signals.append(row.signal)
        if row.amount_at_risk is not None and (f.amount_at_risk is None or row.amount_at_risk > f.amount_at_risk):
            f.amount_at_risk = row.amount_at_risk
    return facts


async def _views(session: AsyncSession, query: Any) -> list[VisitView]:
    rows = (await session.execute(query)).all()
    facts = await case_facts(session, list({r[0].case_id for r in rows}))
    return [VisitView(visit=r[0], due_at=r.due_at, tier=r.tier, task_status=r.status, emergency_at=r.emergency_at,
                      fraud_type=r.fraud_type, phone=r.phone, facts=facts[r[0].case_id]) for r in rows]


def start_of_day(now: datetime) -> datetime:
    """Midnight, local time, of `now`'s day (what "today" means on a page)."""
    return now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)


async def officer_list(session: AsyncSession, principal: Principal, *, now: datetime,
                       limit: int = 200) -> list[VisitView]:
    """An officer's visits: the unit's open ones, those I claimed, those I reported today.

    Live ones first, nearest deadline first; then today's reported, latest first.
    Visits claimed by another officer are left out: nothing to do there.
    """
    mine = Visit.claimed_key_id == principal.key_id
    query = (_WITH_TASK
             .where(Visit.unit.startswith(principal.unit, autoescape=True),
                    (Visit.status == OPEN) | ((Visit.status == CLAIMED) & mine)
                    | ((Visit.status == REPORTED) & mine & (Visit.reported_at >= start_of_day(now))))
             .order_by((Visit.status == REPORTED), Task.due_at, Visit.reported_at.desc(), Visit.id)
             .limit(limit))
    return await _views(session, query)


async def view_of(session: AsyncSession, visit_id: uuid.UUID) -> VisitView | None:
    views = await _views(session, _WITH_TASK.where(Visit.id == visit_id))
    return views[0] if views else None


async def live_in_unit(session: AsyncSession, *, unit: str, limit: int = 500) -> list[VisitView]:
    """Every open or claimed visit in the unit, nearest deadline first (the supervisor's view)."""
    return await _views(session, _WITH_TASK.where(Visit.unit.startswith(unit, autoescape=True),
                                                  Visit.status.in_(LIVE)).order_by(Task.due_at, Visit.id).limit(limit))


async def reported_counts(session: AsyncSession, *, unit: str, since: datetime) -> dict[str, dict[str, int]]:
    """Per unit, how many visits were reported since `since`, by outcome."""
    rows = (await session.execute(
        sql("SELECT unit, outcome, count(*) AS n FROM visits WHERE unit LIKE :unit AND status = 'reported'"
            " AND reported_at >= :since GROUP BY 1, 2"), {"unit": unit + "%", "since": since})).all()
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row.unit, {})[row.outcome] = row.n
    return out


def minutes_left(due_at: datetime, now: datetime) -> int:
    """Whole minutes until the deadline, rounded towards the deadline (negative: overdue)."""
    return int((due_at - now).total_seconds() // 60)


def out(view: VisitView, principal: Principal, *, now: datetime) -> VisitOut:
    v = view.visit
    return VisitOut(
        visit_id=v.id, task_id=v.task_id, case_id=v.case_id, status=v.status, unit=v.unit,  # type: ignore[arg-type]
        region_code=v.region_code, due_at=view.due_at, minutes_left=minutes_left(view.due_at, now),
        tier=view.tier, task_status=view.task_status, emergency=view.emergency_at is not None,  # type: ignore[arg-type]
        fraud_type=view.fraud_type, signals=view.facts.signals, amount_at_risk=view.facts.amount_at_risk,
        phone=view.phone, subject=view.facts.subject, requested_by=v.requested_by, requested_at=v.requested_at,
        note=v.note, claimed_by=v.claimed_by, claimed_at=v.claimed_at, mine=v.claimed_key_id == principal.key_id,
        outcome=v.outcome, report_note=v.report_note, met_at=v.met_at, reported_at=v.reported_at,  # type: ignore[arg-type]
        escalated_at=v.escalated_at, cancelled_at=v.cancelled_at,
    )


def detail(view: VisitView, principal: Principal, *, now: datetime, tried_list: list[TriedOut]) -> VisitDetail:
    return VisitDetail(**out(view, principal, now=now).model_dump(), tried=tried_list)


# Audit entries the officer does not need to read (bookkeeping, or said better by the channels' own records).
_NOT_TOLD = {"task.late_result", "task.step_skipped", "console.signed_in", "console.signed_out"}


async def tried(session: AsyncSession, task_id: uuid.UUID) -> list[TriedOut]:
    """What was already tried for the task, oldest first: alerts, calls, the citizen's answers, people's steps.

    The channels' own records come through what each service offers (shared.contracts);
    an audited channel result stands in for a channel whose records are not there.
    """
    items: list[TriedOut] = []
    seen: set[tuple[str, int]] = set()
    for alert in await bot_contract.alert_deliveries(session, task_id):
        seen.add(("bot_alert", alert.attempt))
        items.append(TriedOut(at=alert.sent_at or alert.created_at, kind="alert", channel="bot_alert",
                              attempt=alert.attempt, result=alert.status, note=alert.error))
        if alert.feedback and alert.feedback_at:
            items.append(TriedOut(at=alert.feedback_at, kind="answer", channel="bot_alert", attempt=alert.attempt,
                                  result=alert.feedback))
    for call in await callcenter_contract.calls_for_task(session, task_id):
        seen.add((call.channel, call.attempt))
        items.append(TriedOut(at=call.created_at, kind="call", channel=call.channel, attempt=call.attempt,
                              result=call.outcome or call.status))
    entries = (await session.execute(
        sql("SELECT at, action, body FROM audit_log WHERE task_id = :t ORDER BY seq"), {"t": task_id})).all()
    for entry in entries:
        if entry.action in _NOT_TOLD:
            continue
        body = orjson.loads(entry.body)
        if entry.action == "task.channel_result":
            channel, attempt = body.get("channel"), int(body.get("attempt") or 0)
            if (channel, attempt) in seen:
                if body.get("feedback") and channel != "bot_alert":
                    # A key pressed on a call: the call record says the call happened, this says what they said.
                    items.append(TriedOut(at=entry.at, kind="answer", channel=channel, attempt=attempt,
                                          result=body["feedback"]))
                continue
            kind = "answer" if body.get("feedback") else ("alert" if channel == "bot_alert" else "call")
            items.append(TriedOut(at=entry.at, kind=kind, channel=channel, attempt=attempt,
                                  result=body.get("feedback") or body.get("result")))
            continue
        # People's words (a requester's note, an officer's report); the visit's own note is on its card already.
        note = body.get("note") if entry.action != "visit.created" else None
        channel = "visit" if entry.action.startswith("visit.") else body.get("channel")
        items.append(TriedOut(at=entry.at, kind="event", channel=channel, result=entry.action,
                              note=str(note) if note else None))
    items.sort(key=lambda item: item.at)
    return items
