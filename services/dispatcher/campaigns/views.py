"""The campaigns API (精准宣防) for supervisors: preview a segment, schedule, follow, cancel. Scoped to the key's unit."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Query, Response

from services.dispatcher.campaigns import service
from services.dispatcher.campaigns.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
    PreviewIn,
    PreviewOut,
    TemplateOut,
)
from services.dispatcher.deps import RuntimeDep, SupervisorKey
from shared.db import transaction
from shared.web import Text

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])


def _forbidden(exc: service.OutOfScope) -> HTTPException:
    return HTTPException(403, f"{exc.field}: {exc.reason}")


@router.get("/templates", response_model=list[TemplateOut])
async def list_templates(principal: SupervisorKey) -> list[TemplateOut]:
    """The ready-made messages, with the full text per language as a citizen would receive it."""
    return service.templates()


@router.post("/preview", response_model=PreviewOut,
             responses={403: {"description": "Not a supervisor key, or the segment's region lies outside your unit"}})
async def preview(body: PreviewIn, principal: SupervisorKey, rt: RuntimeDep) -> PreviewOut:
    """How many bound, active chats the segment matches now (the same query that picks the recipients)."""
    try:
        segment = service.scoped_segment(body.segment, unit=principal.unit)
    except service.OutOfScope as exc:
        raise _forbidden(exc) from None
    async with rt.sessionmaker() as session:
        count = await service.preview_count(session, segment, now=rt.clock.now())
    return PreviewOut(count=count, segment=segment)


@router.post("", response_model=CampaignOut, status_code=201,
             responses={200: {"description": "A replay of a client_ref already used: the first campaign"},
                        403: {"description": "The segment's region lies outside your unit"}})
async def create_campaign(body: CampaignIn, principal: SupervisorKey, rt: RuntimeDep, response: Response) -> CampaignOut:
    """Schedule a campaign for `send_at` (default now); each matching chat gets it once."""
    try:
        async with transaction(rt.sessionmaker) as session:
            created = await service.create(session, principal, body, now=rt.clock.now())
    except service.OutOfScope as exc:
        raise _forbidden(exc) from None
    if not created.new:
        response.status_code = 200
    return service.out(created.campaign)


@router.get("", response_model=CampaignList)
async def list_campaigns(principal: SupervisorKey, rt: RuntimeDep,
                         status: Text | None = Query(default=None, max_length=10),
                         limit: int = Query(default=50, ge=1, le=500)) -> CampaignList:
    """Campaigns targeting inside your unit, newest first."""
    async with rt.sessionmaker() as session:
        rows = await service.list_campaigns(session, unit=principal.unit, status=status, limit=limit)
    return CampaignList(items=[service.out(r) for r in rows])


@router.get("/{campaign_id}", response_model=CampaignOut,
            responses={404: {"description": "no such campaign in your unit"}})
async def get_campaign(campaign_id: uuid.UUID, principal: SupervisorKey, rt: RuntimeDep) -> CampaignOut:
    """One campaign with its progress and delivery report (404 for another unit's campaign)."""
    async with rt.sessionmaker() as session:
        row = await service.get(session, campaign_id, unit=principal.unit)
        if row is None:
            raise HTTPException(404, "no such campaign in your unit")
        errors = await service.errors_of(session, campaign_id)
    return service.out(row, errors)


@router.post("/{campaign_id}/cancel", response_model=CampaignOut, responses={
    404: {"description": "no such campaign in your unit"}, 409: {"description": "it is done or already cancelled"}})
async def cancel_campaign(campaign_id: uuid.UUID, principal: SupervisorKey, rt: RuntimeDep) -> CampaignOut:
    """Stop it: chats not yet sent to will not get it. 409 once it is done or already cancelled."""
    try:
        async with transaction(rt.sessionmaker) as session:
            row = await service.cancel(session, principal, campaign_id, now=rt.clock.now())
    except service.NotCancellable as exc:
        raise HTTPException(409, str(exc)) from None
    if row is None:
        raise HTTPException(404, "no such campaign in your unit")
    return service.out(row)
