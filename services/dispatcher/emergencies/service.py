"""Emergencies and their payment stops: list them, move a stop on, close the task when the bank answers.

Callers own the transaction. A payment stop is guarded by its task's row lock
(tasks.service.lock_task, taken first by every writer of either), so a stop
moved on from the console and a feedback on the same task cannot interleave.
The request itself is created by tasks.service.start_emergency, in the
emergency's own transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.emergencies.models import FINAL_STATUSES, NEXT_STATUSES, OPEN_STATUSES, PaymentStop, cny
from services.dispatcher.tasks import service as tasks
from services.dispatcher.tasks.models import CLOSED, Task
from shared import contracts
from shared.audit import service as audit
from shared.auth.service import Principal
from shared.metrics import TASK_EVENTS


def _record(session: AsyncSession, task: Task, *, at: datetime, actor: str, action: str, **body: Any) -> None:
    # On the task's timeline (task and case ids), like every step of the task itself.
    audit.record(session, at=at, actor=actor, action=action, task_id=task.id, case_id=task.case_id,
                 region_code=task.region_code, **body)


class PaymentStopConflict(Exception):
    """The move asked for is not the next step from the stop's current status (a 409 naming that status)."""

    def __init__(self, current: str, wanted: str) -> None:
        allowed = NEXT_STATUSES[current]
        then = f"it can only move to {' or '.join(allowed)}" if allowed else "it is final"
        super().__init__(f"the payment stop is '{current}': it cannot move to '{wanted}' ({then})")
        self.current, self.wanted = current, wanted


async def list_open(session: AsyncSession, *, unit: str, limit: int = 200) -> list[tuple[Task, PaymentStop]]:
    """Open emergencies (payment stop requested or sent) of tasks in `unit`, most recently reported first."""
    query = (select(Task, PaymentStop).join(PaymentStop, PaymentStop.task_id == Task.id)
             .where(PaymentStop.status.in_(OPEN_STATUSES),
                    or_(Task.region_code.startswith(unit, autoescape=True),
                        Task.assigned_unit.startswith(unit, autoescape=True)))
             .order_by(PaymentStop.requested_at.desc()).limit(limit))
    return [(task, stop) for task, stop in (await session.execute(query)).all()]


async def open_for_banner(session: AsyncSession, *, unit: str) -> list[contracts.OpenEmergency]:
    """The open emergencies as the consoles' banner shows them (the same shape the callcenter reads)."""
    return [contracts.OpenEmergency(task_id=task.id, tier=task.tier, region_code=task.region_code, due_at=task.due_at,
                                    reported_at=stop.requested_at, reported_by=stop.reported_by,
                                    reported_via=stop.reported_via, payment_stop=stop.status)
            for task, stop in await list_open(session, unit=unit, limit=20)]


async def get(session: AsyncSession, *, task_id: uuid.UUID, principal: Principal,
              lock: bool = False) -> tuple[Task, PaymentStop] | None:
    """A task's emergency and payment stop when the task is in the key's unit (None otherwise, or no emergency)."""
    task = await tasks.lock_task(session, task_id) if lock else await session.get(Task, task_id)
    if task is None or not tasks.in_jurisdiction(task, principal):
        return None
    stop = await session.get(PaymentStop, task_id)
    return None if stop is None else (task, stop)


async def move_payment_stop(session: AsyncSession, task: Task, stop: PaymentStop, *, status: str | None,
                            amount_stopped: Decimal | None, reference: str | None, note: str | None,
                            loss: contracts.LossDetails | None, actor: str, now: datetime) -> list[str]:
    """Move a locked task's payment stop one step forward and/or fill in details; returns the audit actions.

    Forward only, one step at a time (models.NEXT_STATUSES); anything else raises
    PaymentStopConflict. `confirmed` and `failed` are the bank's answer and close
    the task with outcome loss_reported: the loss stays the task's outcome, and
    the payment-stop entry on the same timeline carries the amounts (stopped,
    and lost as the citizen said) and the bank's reference. A failed stop held
    back 0 CNY.
    """
    if status is not None and status not in NEXT_STATUSES[stop.status]:
        raise PaymentStopConflict(stop.status, status)
    done: list[str] = []
    if loss is not None:
        changed = stop.take_details(loss.columns(), actor=actor, now=now)
        if changed:
            _record(session, task, at=now, actor=actor, action="payment_stop.details", status=stop.status,
                          details=changed, why="what the citizen said about the transfer")
            done.append("payment_stop.details")
    if note:
        stop.note = note
        stop.updated_at, stop.updated_by = now, actor[:200]
    if status is None:
        if note and not done:
            _record(session, task, at=now, actor=actor, action="payment_stop.noted", status=stop.status,
                          note=note)
            done.append("payment_stop.noted")
        return done
    before = stop.status
    stop.status = status
    stop.updated_at, stop.updated_by = now, actor[:200]
    body: dict[str, Any] = {"before": {"status": before}, "after": {"status": status}, "note": note}
    if status == "sent":
        stop.sent_at, stop.sent_by = now, actor[:200]
        body["why"] = "the bank liaison passed the stop request to the bank"
    else:
        stop.finished_at, stop.finished_by = now, actor[:200]
        stop.amount_stopped_cny = cny(amount_stopped if status == "confirmed" else Decimal("0"))
        if reference:
            stop.reference = reference
        body.update(amount_stopped=stop.amount_stopped_cny, reference=stop.reference,
                    amount_lost=stop.amount_lost_cny, closes_task="loss_reported",
                    why=("the bank confirmed the stop" if status == "confirmed" else "the bank could not stop it")
                    + ": the task closes with outcome loss_reported")
    TASK_EVENTS.labels(f"payment_stop_{status}").inc()
    _record(session, task, at=now, actor=actor, action=f"payment_stop.{status}", **body)
    done.append(f"payment_stop.{status}")
    if status in FINAL_STATUSES and task.status != CLOSED:
        summary = f"payment stop {status}: {stop.amount_stopped_cny} CNY stopped" + (
            f", bank reference {stop.reference}" if stop.reference else "")
        await tasks.close_task(session, task, outcome="loss_reported", actor=actor,
                               note=f"{summary}. {note}" if note else summary, now=now)
        done.append("task.closed")
    return done
