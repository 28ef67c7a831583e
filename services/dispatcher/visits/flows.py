"""Steps that cross from a visit to its task: a visit requested for a task, and a report that becomes task feedback.

`request_visit` and `report` take the caller's session and the task's lock
(tasks.service.lock_task) and never commit. The `run_*` functions are the units
of work the API and the officers' page share: each opens its transaction, takes
the locks in order (case, task, then visit) and commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.tasks import service as tasks
from services.dispatcher.tasks.models import CLOSED, IN_PROGRESS, Task
from services.dispatcher.visits import service
from services.dispatcher.visits.models import CANCELLED, CLAIMED, OPEN, REPORTED, Visit
from shared import contracts
from shared.audit import service as audit
from shared.auth.service import Principal
from shared.db import transaction
from shared.metrics import TASK_EVENTS
from shared.phone import mask_phone
from shared.web import FieldErrors

log = structlog.get_logger(__name__)

# A report's met_at may run this far ahead of the server's clock (a phone's clock is not exact).
MET_AT_CLOCK_SKEW = timedelta(minutes=5)


class TaskIsClosed(Exception):
    """No visit for a closed task: its loop is already closed."""


class ReportRefused(Exception):
    """A report the visit's state does not allow (409), with the reason."""


@dataclass(slots=True)
class ReportResult:
    visit: Visit
    task_action: str  # "closed", "emergency", "details" (of an emergency already open), "escalated", "unchanged"
    replayed: bool


async def request_visit(session: AsyncSession, task: Task, *, actor: str, note: str | None, now: datetime,
                        request_attempt: int | None = None) -> tuple[Visit, bool]:
    """Send officers to a locked task's citizen now (an operator or supervisor), or as the plan asked.

    A person's request is audited on the task's timeline (the plan's own request
    was audited by its timer step as task.visit_requested). With a live visit
    already under way it is that visit, and the request with its note is still
    recorded, so what the requester knows reaches the timeline the officer reads.
    """
    if task.status == CLOSED:
        raise TaskIsClosed(f"the task is closed ({task.outcome}): no visit")
    if request_attempt is None:
        _record_task(session, task, at=now, actor=actor, action="task.visit_requested", unit=service.unit_of(task),
                     note=note, why="sent at once by an operator or supervisor")
    visit, created = await service.create(session, task, actor=actor, note=note, now=now,
                                          request_attempt=request_attempt)
    log.info("visit.created" if created else "visit.already_live", visit_id=str(visit.id), unit=visit.unit,
             phone=mask_phone(task.phone))
    return visit, created


async def report(session: AsyncSession, visit: Visit, task: Task, principal: Principal, *, outcome: str,
                 note: str | None, met_at: datetime | None, idempotency_key: str | None, now: datetime,
                 store: PolicyStore) -> ReportResult:
    """Record what the officer found on a locked visit of a locked task, and move the task by it.

    - dissuaded, refused, false_positive: the task closes with that outcome (task feedback, by a person);
    - loss_reported: task feedback too, which opens the emergency (tier high, payment stop);
      on an emergency already open, any other outcome but not_found is refused
      (tasks.EmergencyOutcomeRefused, a TaskClosed: the payment stop decides how it ends);
    - not_found: the task stays open and goes on to a supervisor (escalated again if a decision
      was already taken since its last escalation, so it is undecided in their queue).

    The same Idempotency-Key again answers the first result and records nothing;
    another report of a reported visit, or of a visit someone else claimed, is refused.
    A report of an open visit claims it on the way (two taps, not four, outdoors).
    """
    if visit.status == REPORTED:
        if idempotency_key and visit.report_key == idempotency_key:
            return ReportResult(visit, visit.task_action or "unchanged", replayed=True)
        raise ReportRefused(service.conflict_reason(visit))
    if visit.status == CANCELLED or task.status == CLOSED:
        raise ReportRefused(service.conflict_reason(visit) if visit.status == CANCELLED
                            else f"the task is already closed ({task.outcome})")
    if visit.status == CLAIMED and visit.claimed_key_id != principal.key_id:
        raise ReportRefused(service.conflict_reason(visit))
    errors = check_met_at(met_at, outcome=outcome, task=task, now=now)
    if errors:
        raise FieldErrors(errors)
    if visit.status == OPEN:
        await service.claim(session, visit, principal, now=now)
    feedback = contracts.VISIT_FEEDBACK[outcome]
    visit.status = REPORTED
    visit.outcome = outcome
    visit.report_note = note
    visit.met_at = None if feedback is None else (met_at or now)
    visit.reported_at = now
    visit.report_key = idempotency_key
    service.record(session, visit, at=now, actor=principal.actor, action="visit.reported", outcome=outcome,
                    note=note, met_at=visit.met_at, within_deadline=now <= task.due_at)
    TASK_EVENTS.labels(f"visit_{outcome}").inc()
    if feedback is None:
        action = _not_found(session, visit, task, principal, now=now)
    else:
        # Meeting the citizen in person reaches them (the compliance report's reach rate counts it).
        if task.reached_at is None:
            task.reached_at = visit.met_at
        result = await tasks.apply_feedback(session, task, outcome=feedback, actor=principal.actor, note=note,
                                            now=now, store=store, by_person=True, via="visit")
        action = result.action
    visit.task_action = action
    return ReportResult(visit, action, replayed=False)


def _not_found(session: AsyncSession, visit: Visit, task: Task, principal: Principal, *, now: datetime) -> str:
    """Nobody at the address: the loop stays open and a supervisor decides the next step."""
    task.status = IN_PROGRESS
    service.record(session, visit, at=now, actor=principal.actor, action="visit.not_found",
                    why="the officer found nobody: the task stays open and goes on to a supervisor")
    decided_since = task.reassigned_at is not None and task.escalated_at is not None \
        and task.reassigned_at >= task.escalated_at
    if task.escalated_at is None or decided_since:
        task.escalated_at = now
        TASK_EVENTS.labels("escalated").inc()
        _record_task(session, task, at=now, actor=principal.actor, action="task.escalated", to="supervisor",
                     visit_id=visit.id, why="field visit found nobody at the address: a supervisor decides the next step")
    return "escalated"


def _record_task(session: AsyncSession, task: Task, *, at: datetime, actor: str, action: str, **body: object) -> None:
    """An audit entry on the task's timeline (as tasks.service records its own)."""
    audit.record(session, at=at, actor=actor, action=action, task_id=task.id, case_id=task.case_id,
                 region_code=task.region_code, **body)


def check_met_at(met_at: datetime | None, *, outcome: str, task: Task, now: datetime) -> list[dict[str, str]]:
    """The report's met_at, checked against the clock and the task (422 field errors; none: fine)."""
    if met_at is None:
        return []
    if contracts.VISIT_FEEDBACK[outcome] is None:
        return [{"field": "met_at", "reason": "nobody was met (outcome not_found): leave met_at out"}]
    if met_at > now + MET_AT_CLOCK_SKEW:
        return [{"field": "met_at", "reason": "is in the future"}]
    if met_at < task.created_at:
        return [{"field": "met_at", "reason": "is before the task was opened"}]
    return []


# ---- units of work (the API and the officers' page) -------------------------------------------------------

async def run_request(sessionmaker: async_sessionmaker[AsyncSession], task_id: uuid.UUID, principal: Principal, *,
                      note: str | None, now: datetime) -> tuple[uuid.UUID, bool] | None:
    """A person sends officers to a task in their unit: (visit id, created now), or None when not theirs.

    TaskIsClosed when the task is closed.
    """
    async with transaction(sessionmaker) as session:
        task = await tasks.lock_task(session, task_id)
        if task is None or not tasks.in_jurisdiction(task, principal):
            return None
        visit, created = await request_visit(session, task, actor=principal.actor, note=note, now=now)
        return visit.id, created


async def run_claim(sessionmaker: async_sessionmaker[AsyncSession], visit_id: uuid.UUID, principal: Principal, *,
                    now: datetime) -> bool | None:
    """Claim a visit in the key's unit: True claimed now, False already mine, None not in the unit.

    VisitConflict when another officer has it or it is over.
    """
    async with transaction(sessionmaker) as session:
        # FOR UPDATE: of two officers racing, the second waits here and then sees the first one's claim.
        visit = await service.get_visible(session, visit_id, principal, lock=True)
        if visit is None:
            return None
        claimed = await service.claim(session, visit, principal, now=now)
    log.info("visit.claimed" if claimed else "visit.claimed_again", visit_id=str(visit_id), actor=principal.actor)
    return claimed


async def run_report(sessionmaker: async_sessionmaker[AsyncSession], visit_id: uuid.UUID, principal: Principal, *,
                     outcome: str, note: str | None, met_at: datetime | None, idempotency_key: str | None,
                     now: datetime, store: PolicyStore) -> ReportResult | None:
    """Report a visit in the key's unit (see `report`); None when it is not in the unit.

    ReportRefused or tasks.TaskClosed (EmergencyOutcomeRefused among them) when the visit's or
    the task's state refuses it;
    FieldErrors for a met_at that cannot be.
    """
    async with transaction(sessionmaker) as session:
        found = await service.get_visible(session, visit_id, principal)
        if found is None:
            return None
        # The task first, then the visit: the order every writer takes them.
        task = await tasks.lock_task(session, found.task_id)
        visit = await service.get_visible(session, visit_id, principal, lock=True)
        assert task is not None and visit is not None
        result = await report(session, visit, task, principal, outcome=outcome, note=note, met_at=met_at,
                              idempotency_key=idempotency_key, now=now, store=store)
        phone = task.phone
    log.info("visit.reported", visit_id=str(visit_id), outcome=outcome, task_action=result.task_action,
             replayed=result.replayed, phone=mask_phone(phone))
    return result
