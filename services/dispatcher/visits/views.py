"""Routes for field visits (见面处置): send officers now, an officer's list, claim, report. Scoped to the key's unit."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Query, Response

from services.dispatcher.deps import FieldKey, RuntimeDep, VisitRequester
from services.dispatcher.tasks import service as tasks
from services.dispatcher.visits import flows, service
from services.dispatcher.visits.schemas import (
    VisitDetail,
    VisitList,
    VisitOut,
    VisitReportIn,
    VisitReportOut,
    VisitRequestIn,
)
from shared.auth.service import Principal

router = APIRouter(tags=["visits"])
log = structlog.get_logger(__name__)

NOT_FOUND = "no visit with this id in your unit"
TASK_NOT_FOUND = "no task with this id in your unit"
# Every route answers these; each adds its own.
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key"},
    403: {"description": "this key's role may not do this"},
    422: {"description": "invalid input: `errors` names each field and the reason"},
}


async def _answer(rt: Any, visit_id: uuid.UUID, principal: Principal) -> VisitOut:
    """The visit as it stands after the transaction committed."""
    async with rt.sessionmaker() as session:
        view = await service.view_of(session, visit_id)
    assert view is not None
    return service.out(view, principal, now=rt.clock.now())


@router.post("/v1/tasks/{task_id}/visits", response_model=VisitOut, status_code=201, responses={
    **AUTH, 200: {"description": "a visit of this task is already open or claimed: that visit (the request and "
                                 "its note are still recorded on the timeline)", "model": VisitOut},
    404: {"description": TASK_NOT_FOUND}, 409: {"description": "the task is closed: no visit"}})
async def request_visit(task_id: uuid.UUID, body: VisitRequestIn, principal: VisitRequester, rt: RuntimeDep,
                        response: Response) -> VisitOut:
    """Send officers of the task's district to the citizen now, with what you know ("she is at the bank now")."""
    structlog.contextvars.bind_contextvars(task_id=str(task_id))
    try:
        made = await flows.run_request(rt.sessionmaker, task_id, principal, note=body.note, now=rt.clock.now())
    except flows.TaskIsClosed as exc:
        raise HTTPException(409, str(exc)) from None
    if made is None:
        raise HTTPException(404, TASK_NOT_FOUND)
    visit_id, created = made
    if not created:
        response.status_code = 200
    return await _answer(rt, visit_id, principal)


@router.get("/v1/visits", response_model=VisitList, responses=AUTH)
async def list_visits(principal: FieldKey, rt: RuntimeDep,
                      limit: int = Query(default=200, ge=1, le=500)) -> VisitList:
    """My unit's open visits, the ones I claimed, and the ones I reported today: live first, nearest deadline first."""
    now = rt.clock.now()
    async with rt.sessionmaker() as session:
        views = await service.officer_list(session, principal, now=now, limit=limit)
    return VisitList(items=[service.out(v, principal, now=now) for v in views])


@router.get("/v1/visits/{visit_id}", response_model=VisitDetail,
            responses={**AUTH, 404: {"description": NOT_FOUND}})
async def get_visit(visit_id: uuid.UUID, principal: FieldKey, rt: RuntimeDep) -> VisitDetail:
    """One visit with what was already tried for its task (alerts, calls, answers, people's steps), oldest first."""
    async with rt.sessionmaker() as session:
        if await service.get_visible(session, visit_id, principal) is None:
            raise HTTPException(404, NOT_FOUND)
        view = await service.view_of(session, visit_id)
        assert view is not None
        tried = await service.tried(session, view.visit.task_id)
    return service.detail(view, principal, now=rt.clock.now(), tried_list=tried)


@router.post("/v1/visits/{visit_id}/claim", response_model=VisitOut, responses={
    **AUTH, 404: {"description": NOT_FOUND},
    409: {"description": "another officer has it (the answer says who), or it was reported or cancelled"}})
async def claim_visit(visit_id: uuid.UUID, principal: FieldKey, rt: RuntimeDep) -> VisitOut:
    """Take the visit: you are going. Claiming your own claim again changes nothing."""
    try:
        claimed = await flows.run_claim(rt.sessionmaker, visit_id, principal, now=rt.clock.now())
    except service.VisitConflict as exc:
        raise HTTPException(409, str(exc)) from None
    if claimed is None:
        raise HTTPException(404, NOT_FOUND)
    return await _answer(rt, visit_id, principal)


@router.post("/v1/visits/{visit_id}/report", response_model=VisitReportOut, responses={
    **AUTH, 404: {"description": NOT_FOUND},
    409: {"description": "already reported (with another Idempotency-Key, or none), claimed by another officer, "
                         "cancelled because the task closed, or an outcome an emergency refuses (money already "
                         "sent: only loss_reported or not_found)"}})
async def report_visit(visit_id: uuid.UUID, body: VisitReportIn, principal: FieldKey, rt: RuntimeDep,
                       idempotency_key: str | None = Header(
                           default=None, alias="Idempotency-Key", min_length=1, max_length=128,
                           pattern=r"^[!-~]+$",
                           description="the same key again (a retried submit) answers the first result and "
                                       "records nothing")) -> VisitReportOut:
    """Report what you found: dissuaded, refused and false_positive close the task; loss_reported opens the
    emergency; not_found keeps it open and sends it on to a supervisor."""
    try:
        result = await flows.run_report(rt.sessionmaker, visit_id, principal, outcome=body.outcome, note=body.note,
                                        met_at=body.met_at, idempotency_key=idempotency_key, now=rt.clock.now(),
                                        store=rt.store)
    except (flows.ReportRefused, tasks.TaskClosed) as exc:
        raise HTTPException(409, str(exc)) from None
    if result is None:
        raise HTTPException(404, NOT_FOUND)
    return VisitReportOut(visit=await _answer(rt, visit_id, principal), task_action=result.task_action,  # type: ignore[arg-type]
                          replayed=result.replayed)
