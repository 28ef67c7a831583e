"""Routes for tasks: read, list (cursor paging), feedback. A key sees only its unit's tasks."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from services.dispatcher.deps import FeedbackKey, RuntimeDep, SupervisorKey, TaskReader
from services.dispatcher.policy.service import plan_steps
from services.dispatcher.tasks import service
from services.dispatcher.tasks.models import Task
from services.dispatcher.tasks.schemas import (
    FeedbackIn,
    FeedbackOut,
    PlanStepOut,
    ReassignIn,
    TaskEvent,
    TaskOut,
    TaskPage,
)
from shared.auth.service import Principal
from shared.db import transaction
from shared.phone import mask_phone
from shared.sql import sql
from shared.web import FieldErrors

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
log = structlog.get_logger(__name__)
NOT_FOUND = "no task with this id in your unit"


def task_out(task: Task, *, plan: list[PlanStepOut] | None = None, events: list[TaskEvent] | None = None) -> TaskOut:
    return TaskOut(
        task_id=task.id, case_id=task.case_id, tier=task.tier, status=task.status, due_at=task.due_at,  # type: ignore[arg-type]
        breached=task.breached, outcome=task.outcome, region_code=task.region_code, fraud_type=task.fraud_type,
        phone_masked=mask_phone(task.phone), created_at=task.created_at, escalated_at=task.escalated_at,
        emergency_at=task.emergency_at, reached_at=task.reached_at, closed_at=task.closed_at,
        closed_by=task.closed_by, policy_version=task.policy_version,
        attempts={k: v for k, v in (task.attempts or {}).items() if isinstance(v, int)},
        plan=plan or [], events=events or [],
    )


async def _detail(session, rt, task: Task) -> TaskOut:  # noqa: ANN001
    policy = await rt.store.get(session, task.policy_version)
    steps = [PlanStepOut(step=s.name, at=s.at, done=s.name in (task.steps_done or []))
             for s in plan_steps(policy.playbook(task.tier), plan_started_at=task.plan_started_at,
                                 due_at=task.due_at)]
    rows = (await session.execute(
        sql("SELECT seq, at, action, actor, body FROM audit_log WHERE task_id = :t ORDER BY seq"),
        {"t": task.id})).all()
    events = [TaskEvent(seq=r.seq, at=r.at, type=r.action, actor=r.actor, detail=orjson.loads(r.body))
              for r in rows]
    return task_out(task, plan=steps, events=events)


def _visible(task: Task | None, principal: Principal) -> Task:
    # Outside the key's unit the task "does not exist": saying 403 would confirm it does.
    if task is None or not service.in_jurisdiction(task, principal):
        raise HTTPException(404, NOT_FOUND)
    return task


@router.get("/{task_id}", response_model=TaskOut, responses={404: {"description": NOT_FOUND}})
async def get_task(task_id: uuid.UUID, principal: TaskReader, rt: RuntimeDep) -> TaskOut:
    """The task with its plan and its timeline (every audited step)."""
    async with rt.sessionmaker() as session:
        task = _visible(await session.get(Task, task_id), principal)
        return await _detail(session, rt, task)


@router.get("", response_model=TaskPage,
            responses={403: {"description": "Not a key that reads tasks, or `region` lies outside the key's unit"}})
async def list_tasks(
    principal: TaskReader,
    rt: RuntimeDep,
    status: str | None = Query(default=None, pattern="^(open|in_progress|closed)$"),
    tier: str | None = Query(default=None, pattern="^(high|medium|low)$"),
    region: str | None = Query(default=None, pattern=r"^[0-9]{2,6}$", description="region-code prefix"),
    breached: bool | None = None,
    escalated: bool | None = None,
    cursor: str | None = Query(default=None, max_length=36, description="next_cursor from the previous page"),
    limit: int = Query(default=50, ge=1, le=500),
) -> TaskPage:
    """Tasks in your unit, oldest first, filtered; follow `next_cursor` for the next page."""
    prefix = principal.unit
    if region is not None:
        if not region.startswith(principal.unit) and not principal.unit.startswith(region):
            raise HTTPException(403, f"region {region} is outside this key's unit ({principal.unit or 'nationwide'})")
        prefix = region if len(region) > len(principal.unit) else principal.unit
    query = select(Task).where(Task.region_code.startswith(prefix, autoescape=True)).order_by(Task.id).limit(limit + 1)
    if status:
        query = query.where(Task.status == status)
    if tier:
        query = query.where(Task.tier == tier)
    if breached is not None:
        query = query.where(Task.breached.is_(breached))
    if escalated is not None:
        query = query.where(Task.escalated_at.is_not(None) if escalated else Task.escalated_at.is_(None))
    if cursor:
        try:
            query = query.where(Task.id > uuid.UUID(cursor))
        except ValueError:
            raise FieldErrors.one("cursor", "is not one this API gave out") from None
    async with rt.sessionmaker() as session:
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return TaskPage(items=[task_out(t) for t in rows], next_cursor=str(rows[-1].id) if more else None)


@router.post("/{task_id}/feedback", response_model=FeedbackOut,
             responses={404: {"description": NOT_FOUND}, 409: {
                 "description": "closed with another outcome, or an outcome an emergency refuses"}})
async def post_feedback(task_id: uuid.UUID, body: FeedbackIn, principal: FeedbackKey, rt: RuntimeDep) -> FeedbackOut:
    """Record an outcome from an officer, operator or supervisor; it closes the task or opens an emergency."""
    now: datetime = rt.clock.now()
    structlog.contextvars.bind_contextvars(task_id=str(task_id))
    async with transaction(rt.sessionmaker) as session:
        task = _visible(await service.lock_task(session, task_id), principal)
        try:
            result = await service.apply_feedback(session, task, outcome=body.outcome, actor=principal.actor,
                                                  note=body.note, now=now, store=rt.store, by_person=True)
        except service.TaskClosed as exc:
            raise HTTPException(409, str(exc)) from None
    log.info("task.feedback", outcome=body.outcome, action=result.action, changed=result.changed,
             actor=principal.actor)
    async with rt.sessionmaker() as session:
        task = await session.get(Task, task_id)
        detail = await _detail(session, rt, task)  # type: ignore[arg-type]
    return FeedbackOut(changed=result.changed, action=result.action, task=detail)


@router.post("/{task_id}/reassign", response_model=TaskOut,
             responses={404: {"description": NOT_FOUND}, 409: {"description": "the task is closed"}})
async def reassign(task_id: uuid.UUID, body: ReassignIn, principal: SupervisorKey, rt: RuntimeDep) -> TaskOut:
    """A supervisor's decision: hand the task to another unit inside yours, or to the seats now (audited)."""
    if body.to == "unit" and not (body.unit or "").startswith(principal.unit):
        raise FieldErrors([{"field": "unit", "reason": f"must lie inside your unit ({principal.unit or 'nationwide'})"}])
    async with transaction(rt.sessionmaker) as session:
        task = _visible(await service.lock_task(session, task_id), principal)
        try:
            await service.reassign(session, task, to_unit=body.unit if body.to == "unit" else None,
                                   actor=principal.actor, note=body.note, now=rt.clock.now())
        except service.TaskClosed as exc:
            raise HTTPException(409, f"the task is closed ({exc})") from None
    async with rt.sessionmaker() as session:
        return await _detail(session, rt, await session.get(Task, task_id))  # type: ignore[arg-type]
