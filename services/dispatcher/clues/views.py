"""The clue mailbox for supervisors: what citizens reported, in their unit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.dispatcher.clues import service
from services.dispatcher.clues.models import Clue
from services.dispatcher.deps import RuntimeDep, SupervisorKey
from shared.db import transaction
from shared.phone import mask_phone
from shared.web import FieldErrors, Text

router = APIRouter(prefix="/v1/clues", tags=["clues"])


class ClueOut(BaseModel):
    clue_id: uuid.UUID
    ref: str
    kind: str
    value: str
    description: str | None
    channel: str
    reporter_phone_masked: str | None
    region_code: str | None
    status: str
    reported_at: datetime
    answer_due_at: datetime | None = None
    answer: str | None = None
    answered_at: datetime | None = None
    overdue: bool = False


class CluePage(BaseModel):
    items: list[ClueOut]
    next_cursor: str | None


def clue_out(clue: Clue, now: datetime) -> ClueOut:
    return ClueOut(clue_id=clue.id, ref=clue.ref, kind=clue.kind, value=clue.value, description=clue.description,
                   channel=clue.channel,
                   reporter_phone_masked=mask_phone(clue.reporter_phone) if clue.reporter_phone else None,
                   region_code=clue.region_code, status=clue.status, reported_at=clue.reported_at,
                   answer_due_at=clue.answer_due_at, answer=clue.answer, answered_at=clue.answered_at,
                   overdue=service.is_overdue(clue, now))


@router.get("", response_model=CluePage, responses={403: {"description": "Not a supervisor key"}})
async def list_clues(principal: SupervisorKey, rt: RuntimeDep, status: Text | None = Query(default=None, max_length=12),
                     cursor: uuid.UUID | None = None, limit: int = Query(default=50, ge=1, le=500)) -> CluePage:
    """Clues in your unit, newest first. Clues not yet routed to a unit are visible to nationwide keys only."""
    query = select(Clue).order_by(Clue.id.desc()).limit(limit + 1)
    if principal.unit:
        query = query.where(Clue.region_code.startswith(principal.unit, autoescape=True))
    if status:
        query = query.where(Clue.status == status)
    if cursor:
        query = query.where(Clue.id < cursor)
    async with rt.sessionmaker() as session:
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return CluePage(
        items=[clue_out(c, rt.clock.now()) for c in rows],
        next_cursor=str(rows[-1].id) if more else None)




class ClueStepIn(BaseModel):
    """One step of a clue's workflow: route it to a unit, answer the citizen, or close it."""

    model_config = ConfigDict(extra="forbid")

    step: Literal["route", "answer", "close"]
    unit: str | None = Field(default=None, pattern=r"^([0-9]{2}|[0-9]{4}|[0-9]{6})$", description="with step=route")
    answer: Text | None = Field(default=None, min_length=1, max_length=2000, description="with step=answer")


@router.post("/{clue_id}/steps", response_model=ClueOut, responses={404: {"description": "not in your unit"},
                                                                    409: {"description": "not allowed in its state"}})
async def clue_step(clue_id: uuid.UUID, body: ClueStepIn, principal: SupervisorKey, rt: RuntimeDep) -> ClueOut:
    """前台受理、后台流转、限时反馈、跟踪督办: route, answer (within 72 h of the report) or close a clue; audited."""
    if body.step == "route" and not (body.unit and body.unit.startswith(principal.unit)):
        raise FieldErrors([{"field": "unit", "reason": f"required, inside your unit ({principal.unit or 'all'})"}])
    if body.step == "answer" and not (body.answer or "").strip():
        raise FieldErrors([{"field": "answer", "reason": "required: the text the citizen receives"}])
    now = rt.clock.now()
    async with transaction(rt.sessionmaker) as session:
        clue = await service.lock_clue(session, clue_id, unit=principal.unit)
        if clue is None:
            raise HTTPException(404, "no such clue in your unit")
        try:
            await service.apply_step(session, clue, step=body.step, unit=body.unit, answer=body.answer,
                                     actor=principal.actor, now=now)
        except service.ClueStateError as exc:
            raise HTTPException(409, str(exc)) from None
        return clue_out(clue, now)
