"""The seat-operator API (96110 desks): state, next task, click-to-call, disposition, my tasks, history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.callcenter.seats import service
from shared import contracts
from shared.auth.deps import require_roles
from shared.auth.service import Principal
from shared.db import transaction
from shared.phone import InvalidPhone, normalize_phone
from shared.web import AwareTime, ErrorBody, FieldErrors, Text

router = APIRouter(tags=["seat operators"])
OperatorKey = Annotated[Principal, Depends(require_roles("operator"))]


class SeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"state": "available", "phone": "+8657187000001"}, {"state": "paused", "reason": "培训 (training)"}]})

    state: Literal["available", "paused", "offline"]
    reason: Text | None = Field(default=None, max_length=200, description="why paused")
    phone: str | None = Field(default=None, description="the seat's own phone, rung first by click-to-call")

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise ValueError(str(exc).removeprefix("phone ")) from None


class SeatOut(BaseModel):
    key_id: str
    name: str
    unit: str
    state: str
    reason: str | None
    phone: str | None
    updated_at: datetime


class Claimed(BaseModel):
    task_id: uuid.UUID
    tier: str
    phone: str
    fraud_type: str
    region_code: str
    due_at: datetime
    reasons: list[dict[str, Any]]
    claim_expires_at: datetime


class CallOut(BaseModel):
    call_sid: str
    rings: str = Field(description="my seat's phone, rung first")
    then_bridges_to: str = Field(description="the citizen's phone, dialled when I answer")


class LiveCall(BaseModel):
    connected_at: datetime | None
    ended_at: datetime | None


class MyTask(BaseModel):
    task_id: str
    tier: str
    status: str
    due_at: datetime
    region_code: str
    fraud_type: str
    claim_expires_at: datetime | None
    live_call: LiveCall | None = Field(description="key 2: the citizen was put through to this seat")


class MyTasksOut(BaseModel):
    items: list[MyTask]


class HistoryCase(BaseModel):
    case_id: str
    task_id: str
    opened_at: datetime
    status: str | None
    tier: str | None
    region_code: str | None
    outcome: str | None
    closed_at: datetime | None


class HistoryWarning(BaseModel):
    case_id: str
    source: str
    signal: str
    fraud_type: str
    tier: str | None
    occurred_at: datetime


class HistoryCall(BaseModel):
    task_id: str
    channel: str
    attempt: int
    status: str
    outcome: str | None
    at: datetime
    duration_s: int | None


class HistoryOut(BaseModel):
    phone: str
    cases: list[HistoryCase]
    warnings: list[HistoryWarning]
    calls: list[HistoryCall]


class DispositionOut(BaseModel):
    task_id: str
    disposition: str
    recorded: bool


class LossIn(contracts.LossDetails):
    """What the citizen said about the transfer (every field optional: record what you learnt)."""

    model_config = ConfigDict(extra="forbid")

    bank: Text | None = Field(default=None, min_length=1, max_length=100)
    account: Text | None = Field(default=None, min_length=1, max_length=64)
    transferred_at: AwareTime | None = None


class DispositionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"disposition": "dissuaded", "note": "已劝阻，市民表示不再转账"},
        {"disposition": "callback", "callback_at": "2026-11-21T15:00:00+08:00", "note": "下班后再联系"},
        {"disposition": "loss_reported", "note": "已让市民拨打银行客服和110",
         "loss": {"bank": "中国工商银行", "account": "6222020000001234", "amount_lost": "50000",
                  "transferred_at": "2026-11-21T10:05:00+08:00"}}]})

    disposition: Literal["dissuaded", "loss_reported", "unreachable", "wrong_number", "refused", "callback"] = Field(
        description="dissuaded, refused: the task closes so; loss_reported: an emergency and a payment stop;"
                    " callback: called again at callback_at; unreachable (nobody answered) and wrong_number (the"
                    " number is not the citizen's; never called again): the task stays open and officers of its"
                    " district visit the citizen now (a supervisor is alerted when a visit was already made)")
    note: Text | None = Field(default=None, max_length=2000)
    callback_at: AwareTime | None = Field(default=None, description="required for `callback`: when to call again")
    loss: LossIn | None = Field(default=None, description="with loss_reported: what the citizen said about the"
                                                          " transfer, for the payment stop (保护性止付)")


class HeldOut(BaseModel):
    task_id: uuid.UUID
    tier: str
    due_at: datetime
    claim_expires_at: datetime | None


class HoldingOut(ErrorBody):
    """The one error model (`detail`), and the tasks the seat holds: why nothing was claimed."""

    held: list[HeldOut] = Field(default_factory=list, description="the tasks my seat holds now (only when that is"
                                                                   " why nothing was claimed)")


class HangUpOut(BaseModel):
    task_id: uuid.UUID
    call_sid: str = Field(description="the call ended (Twilio Status=completed)")


class Holding(Exception):
    """My seat already holds a task: 409 with the task(s), so a client can decide (held=release or keep)."""

    def __init__(self, refused: service.SeatRefused) -> None:
        super().__init__(refused.detail)
        self.refused = refused

    def response(self) -> JSONResponse:
        held = [HeldOut(task_id=h.id, tier=h.tier, due_at=h.due_at, claim_expires_at=h.lease_expires_at)
                for h in self.refused.held]
        body = HoldingOut(detail=self.refused.detail, held=held)
        return JSONResponse(body.model_dump(mode="json"), status_code=409)


@contextmanager
def answered_as_http() -> Iterator[None]:
    """A seat action the service refused becomes the HTTP error it names (409, or 422 naming the field)."""
    try:
        yield
    except service.SeatRefused as exc:
        if exc.status == 422:
            field, _, reason = exc.detail.partition(": ")
            raise FieldErrors.one(field, reason) from None
        if exc.held:
            raise Holding(exc) from None
        raise HTTPException(exc.status, exc.detail) from None


@router.put("/v1/seat", response_model=SeatOut)
async def put_seat(body: SeatIn, principal: OperatorKey, request: Request) -> Any:
    """Set my seat's state (available, paused with a reason, offline) and, once, its phone."""
    with answered_as_http():
        async with transaction(request.app.state.sessionmaker) as session:
            row = await service.change_state(session, principal, state=body.state, reason=body.reason,
                                             phone=body.phone, now=request.app.state.clock.now())
    return dict(row._mapping)


@router.post("/v1/queue/next", response_model=Claimed, responses={
    204: {"description": "nothing waiting"},
    409: {"model": HoldingOut,
          "description": "my seat already holds a task (`held` names it; ask again with held=release or held=keep),"
                         " or my seat is not available (paused, offline, on a call, or in wrap-up after a"
                         " disposition: PUT /v1/seat {\"state\": \"available\"} first; then no `held`)"}})
async def next_task(principal: OperatorKey, request: Request, response: Response,
                    held: Literal["ask", "release", "keep"] = Query(default="ask", description=(
                        "when my seat already holds a task: ask (409 naming it, nothing claimed), release (return"
                        " it to the queue, then claim; refused once a call was placed for it) or keep (claim a"
                        " second one as well)"))) -> Any:
    """Claim the next task for my unit (highest tier, then earliest deadline); 204 when none waits.

    One task at a time: with a task already held the answer is 409 naming it, unless `held` says what to do.
    """
    try:
        with answered_as_http():
            async with transaction(request.app.state.sessionmaker) as session:
                claimed = await service.take_next(session, principal, now=request.app.state.clock.now(),
                                                  scale=request.app.state.clock.scale, held=held)
    except Holding as holding:
        return holding.response()
    if claimed is None:
        return Response(status_code=204)
    task = claimed.task
    if claimed.claim_ms is not None:
        # The claim statement's own time (W3C Server-Timing): `shouhu bench calls` reads it to tell the
        # database's part from the HTTP queueing in front of it.
        response.headers["Server-Timing"] = f"claim;dur={claimed.claim_ms:.3f}"
    return Claimed(task_id=task.id, tier=task.tier, phone=task.phone, fraud_type=task.fraud_type,
                   region_code=task.region_code, due_at=task.due_at, reasons=claimed.reasons,
                   claim_expires_at=claimed.expires_at)


@router.post("/v1/tasks/{task_id}/call", response_model=CallOut, responses={
    409: {"description": "the task is not claimed by my seat, my seat has no phone, or a call is already on"}})
async def click_to_call(task_id: uuid.UUID, principal: OperatorKey, request: Request) -> Any:
    """Ring my seat's phone, then bridge it to the citizen."""
    state = request.app.state
    with answered_as_http():
        sid, plan = await service.click_to_call(state.sessionmaker, state.placer, principal, task_id,
                                                from_number=state.settings.from_number(), now=state.clock.now())
    return {"call_sid": sid, "rings": plan.seat_phone, "then_bridges_to": plan.citizen_phone}


@router.post("/v1/tasks/{task_id}/hangup", response_model=HangUpOut, responses={
    409: {"description": "the task is not claimed by my seat, or there is no live call on it"}})
async def hang_up(task_id: uuid.UUID, principal: OperatorKey, request: Request) -> Any:
    """End my seat's live call on a task I hold (click-to-call, or a citizen put through by key 2)."""
    state = request.app.state
    with answered_as_http():
        sid = await service.hang_up(state.sessionmaker, state.placer, principal, task_id, now=state.clock.now())
    return {"task_id": task_id, "call_sid": sid}


@router.post("/v1/tasks/{task_id}/disposition", status_code=202, response_model=DispositionOut,
             responses={409: {"description": "not claimed by my seat, or dissuaded on an emergency (the reason says)"},
                        422: {"description": "bad input: the field is named"}})
async def disposition(task_id: uuid.UUID, body: DispositionIn, principal: OperatorKey, request: Request) -> Any:
    """Record what happened on the call; the dispatcher closes, escalates or reschedules the task.

    On an emergency (the citizen already sent money) record `loss_reported` with what they said (`loss`):
    it goes on the payment stop; `dissuaded` is refused (409).
    """
    if body.loss is not None and body.disposition != "loss_reported":
        raise FieldErrors([{"field": "loss", "reason": "only with disposition loss_reported"}])
    with answered_as_http():
        async with transaction(request.app.state.sessionmaker) as session:
            await service.dispose(session, principal, task_id, disposition=body.disposition, note=body.note,
                                  callback_at=body.callback_at, now=request.app.state.clock.now(),
                                  wrap_up_s=request.app.state.clock.real_s(request.app.state.settings.seat_wrap_up_s),
                                  loss=contracts.LossDetails(**body.loss.model_dump()) if body.loss else None)
    return {"task_id": str(task_id), "disposition": body.disposition, "recorded": True}


@router.get("/v1/tasks", response_model=MyTasksOut)
async def list_my_tasks(principal: OperatorKey, request: Request, mine: bool = True) -> Any:
    """The tasks my seat holds now (mine=true; the unit's task list is the dispatcher's GET /v1/tasks)."""
    if not mine:
        raise FieldErrors.one("mine", "only mine=true is served here; the dispatcher lists the unit's tasks")
    async with transaction(request.app.state.sessionmaker) as session:
        rows = await service.my_tasks(session, principal, now=request.app.state.clock.now(),
                                      scale=request.app.state.clock.scale)
    return {"items": [{"task_id": str(r.id), "tier": r.tier, "status": r.status, "due_at": r.due_at,
                       "region_code": r.region_code, "fraud_type": r.fraud_type,
                       "claim_expires_at": r.lease_expires_at,
                       # key 2: the citizen was put through to this seat (the call timer runs from connected_at)
                       "live_call": {"connected_at": r.connected_at, "ended_at": r.call_ended_at}
                       if r.connected_at else None} for r in rows]}


class BoardSeatOut(BaseModel):
    key_id: str
    name: str
    unit: str
    state: Literal["available", "on_task", "on_call", "wrap_up", "paused", "offline"] = Field(
        description="on_task: available, holding a claimed task (处置中)")
    reason: str | None = Field(description="why paused")
    since: datetime = Field(description="in this state since")


class QueueDepthOut(BaseModel):
    by_tier: dict[str, int] = Field(description="operator calls claimable now: emergency, high, medium, low")
    by_unit: dict[str, dict[str, int]] = Field(description="the same by the task's unit (district, or a city for a"
                                                           " task handed to it), then tier")
    later: int = Field(description="waiting for a later time (an agreed call-back)")


class BoardOut(BaseModel):
    seats: list[BoardSeatOut]
    queue: QueueDepthOut


@router.get("/v1/seats", response_model=BoardOut)
async def seat_board(principal: Annotated[Principal, Depends(require_roles("operator", "supervisor"))],
                     request: Request) -> Any:
    """The seat board of my unit (operators and supervisors): every seat's state and since when, and the queue
    depth by tier and unit. Only my unit's seats and tasks are counted."""
    now = request.app.state.clock.now()
    async with request.app.state.sessionmaker() as session:
        seats = await service.board_seats(session, principal, now=now)
        depth = await service.queue_depth(session, principal, now=now)
    return {"seats": [{"key_id": r.key_id, "name": r.name, "unit": r.unit, "state": r.state, "reason": r.reason,
                       "since": r.since} for r in seats],
            "queue": {"by_tier": depth.by_tier, "by_unit": depth.by_unit, "later": depth.later}}


@router.get("/v1/subjects/{phone}/history", response_model=HistoryOut,
            responses={404: {"description": "no history for this number in your unit"}})
async def subject_history(phone: str = Path(max_length=40), *, principal: OperatorKey, request: Request) -> Any:
    """A citizen's earlier warnings, calls and outcomes, within my unit only (404 otherwise)."""
    try:
        e164 = normalize_phone(phone)
    except InvalidPhone as exc:
        raise FieldErrors.one("phone", str(exc).removeprefix("phone ")) from None
    async with request.app.state.sessionmaker() as session:
        found = await service.history(session, principal, phone=e164)
    if found is None:
        raise HTTPException(404, "no history for this number in your unit")
    return {
        "phone": e164,
        "cases": [{"case_id": str(c.id), "task_id": str(c.task_id), "opened_at": c.created_at, "status": c.status,
                   "tier": c.tier, "region_code": c.region_code, "outcome": c.outcome, "closed_at": c.closed_at}
                  for c in found["cases"]],
        "warnings": [{"case_id": str(w.case_id), "source": w.source, "signal": w.signal, "fraud_type": w.fraud_type,
                      "tier": w.tier, "occurred_at": w.occurred_at} for w in found["warnings"]],
        "calls": [{"task_id": str(c.task_id), "channel": c.channel, "attempt": c.attempt, "status": c.status,
                   "outcome": c.outcome, "at": c.created_at, "duration_s": c.duration_s} for c in found["calls"]],
    }
