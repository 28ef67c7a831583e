"""Routes for emergencies: the open ones in my unit, and moving a payment stop on. Thin: the service decides."""

from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter, HTTPException

from services.dispatcher.deps import FeedbackKey, RuntimeDep, SupervisorKey
from services.dispatcher.emergencies import service
from services.dispatcher.emergencies.models import PaymentStop
from services.dispatcher.emergencies.schemas import (
    EmergencyList,
    EmergencyOut,
    PaymentStopIn,
    field_errors,
    payment_stop_out,
)
from services.dispatcher.tasks.models import Task
from shared import contracts
from shared.db import transaction
from shared.web import FieldErrors

router = APIRouter(prefix="/v1/emergencies", tags=["emergencies"])
log = structlog.get_logger(__name__)
NOT_FOUND = "no emergency for this task in your unit"


def emergency_out(task: Task, stop: PaymentStop) -> EmergencyOut:
    return EmergencyOut(
        task_id=task.id, case_id=task.case_id, tier=task.tier, task_status=task.status,  # type: ignore[arg-type]
        outcome=task.outcome, region=task.region_code, assigned_unit=task.assigned_unit, fraud_type=task.fraud_type,
        due_at=task.due_at, breached=task.breached, reported_at=stop.requested_at, payment_stop=payment_stop_out(stop))


@router.get("", response_model=EmergencyList,
            responses={401: {"description": "missing or unknown key"},
                       403: {"description": "an ingest key (operators, officers, supervisors and admins may read)"}})
async def list_emergencies(principal: FeedbackKey, rt: RuntimeDep) -> EmergencyList:
    """Open emergencies in your unit (a loss reported, its payment stop requested or sent), newest first."""
    async with rt.sessionmaker() as session:
        rows = await service.list_open(session, unit=principal.unit)
    return EmergencyList(items=[emergency_out(task, stop) for task, stop in rows])


@router.get("/{task_id}", response_model=EmergencyOut,
            responses={401: {"description": "missing or unknown key"}, 403: {"description": "an ingest key"},
                       404: {"description": NOT_FOUND}})
async def get_emergency(task_id: uuid.UUID, principal: FeedbackKey, rt: RuntimeDep) -> EmergencyOut:
    """One task's emergency and payment stop, open or finished."""
    async with rt.sessionmaker() as session:
        found = await service.get(session, task_id=task_id, principal=principal)
    if found is None:
        raise HTTPException(404, NOT_FOUND)
    return emergency_out(*found)


@router.post("/{task_id}/payment-stop", response_model=EmergencyOut,
             responses={401: {"description": "missing or unknown key"},
                        403: {"description": "not a supervisor or admin key"},
                        404: {"description": NOT_FOUND + " (another unit's task is not found either)"},
                        409: {"description": "not the next step from the current status (the answer names it)"},
                        422: {"description": "bad input: each error names its field"}})
async def move_payment_stop(task_id: uuid.UUID, body: PaymentStopIn, principal: SupervisorKey,
                            rt: RuntimeDep) -> EmergencyOut:
    """Move the payment stop on: requested → sent → confirmed (amount_stopped ≥ 0 CNY and the bank's reference)
    or failed. Confirmed or failed closes the task with outcome loss_reported. Every step is audited.

    Without `status`, the body only fills in what the citizen said (bank, account, amount_lost, transferred_at)
    or adds a note.
    """
    errors = field_errors(body)
    if errors:
        raise FieldErrors(errors)
    loss = None
    if any(v is not None for v in (body.bank, body.account, body.amount_lost, body.transferred_at)):
        loss = contracts.LossDetails(bank=body.bank, account=body.account, amount_lost=body.amount_lost,
                                     transferred_at=body.transferred_at)
    structlog.contextvars.bind_contextvars(task_id=str(task_id))
    async with transaction(rt.sessionmaker) as session:
        found = await service.get(session, task_id=task_id, principal=principal, lock=True)
        if found is None:
            raise HTTPException(404, NOT_FOUND)
        task, stop = found
        try:
            done = await service.move_payment_stop(
                session, task, stop, status=body.status, amount_stopped=body.amount_stopped,
                reference=body.reference.strip() if body.reference else None, note=body.note, loss=loss,
                actor=principal.actor, now=rt.clock.now())
        except service.PaymentStopConflict as exc:
            raise HTTPException(409, str(exc)) from None
        answer = emergency_out(task, stop)
    log.info("payment_stop.moved", status=body.status, done=done, actor=principal.actor)
    return answer
