"""The clue mailbox for supervisors: what citizens reported, in their unit."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from services.dispatcher.clues.models import Clue
from services.dispatcher.deps import RuntimeDep, SupervisorKey
from shared.phone import mask_phone

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


class CluePage(BaseModel):
    items: list[ClueOut]
    next_cursor: str | None


@router.get("", response_model=CluePage)
async def list_clues(principal: SupervisorKey, rt: RuntimeDep, status: str | None = Query(default=None, max_length=12),
                     cursor: str | None = None, limit: int = Query(default=50, ge=1, le=500)) -> CluePage:
    """Clues in your unit, newest first. Clues not yet routed to a unit are visible to nationwide keys only."""
    query = select(Clue).order_by(Clue.id.desc()).limit(limit + 1)
    if principal.unit:
        query = query.where(Clue.region_code.startswith(principal.unit, autoescape=True))
    if status:
        query = query.where(Clue.status == status)
    if cursor:
        query = query.where(Clue.id < uuid.UUID(cursor))
    async with rt.sessionmaker() as session:
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return CluePage(
        items=[ClueOut(clue_id=c.id, ref=c.ref, kind=c.kind, value=c.value, description=c.description,
                       channel=c.channel, reporter_phone_masked=mask_phone(c.reporter_phone) if c.reporter_phone
                       else None, region_code=c.region_code, status=c.status, reported_at=c.reported_at)
               for c in rows],
        next_cursor=str(rows[-1].id) if more else None)
