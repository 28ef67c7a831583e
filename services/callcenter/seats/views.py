"""The seat-operator API (96110 desks): state, next task, click-to-call, disposition, my tasks, history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.callcenter.calls.service import STATUS_EVENTS
from services.callcenter.seats import service
from shared.auth.deps import require_roles
from shared.auth.service import Principal
from shared.db import transaction
from shared.phone import InvalidPhone, normalize_phone
from shared.queue.service import LeaseLost
from shared.sql import sql

router = APIRouter(tags=["seat operators"])
OperatorKey = Annotated[Principal, Depends(require_roles("operator"))]
NOT_CLAIMED = "this task is not claimed by your seat (claim it with POST /v1/queue/next), or your claim expired"


class SeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"state": "available", "phone": "+8657187000001"}, {"state": "paused", "reason": "培训 (training)"}]})

    state: Literal["available", "paused", "offline"]
    reason: str | None = Field(default=None, max_length=200, description="why paused")
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


class DispositionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"disposition": "dissuaded", "note": "已劝阻，市民表示不再转账"},
        {"disposition": "callback", "callback_at": "2026-11-21T15:00:00+08:00", "note": "下班后再联系"}]})

    disposition: Literal["dissuaded", "loss_reported", "unreachable", "wrong_number", "refused", "callback"]
    note: str | None = Field(default=None, max_length=2000)
    callback_at: datetime | None = Field(default=None, description="required for `callback`: when to call again")


@router.put("/v1/seat", response_model=SeatOut)
async def put_seat(body: SeatIn, principal: OperatorKey, request: Request) -> Any:
    """Set my seat's state (available, paused with a reason, offline) and, once, its phone."""
    if body.state == "paused" and not body.reason:
        raise HTTPException(422, "reason: required when pausing")
    async with transaction(request.app.state.sessionmaker) as session:
        row = await service.set_state(session, principal, state=body.state, reason=body.reason, phone=body.phone,
                                      now=request.app.state.clock.now())
    return dict(row._mapping)


@router.post("/v1/queue/next", response_model=Claimed, responses={204: {"description": "nothing waiting"}})
async def next_task(principal: OperatorKey, request: Request) -> Any:
    """Claim the next task for my unit (highest tier, then earliest deadline); 204 when none waits."""
    now = request.app.state.clock.now()
    async with transaction(request.app.state.sessionmaker) as session:
        seat = await service.get_seat(session, principal)
        if seat is None or seat.state != "available":
            raise HTTPException(409, "your seat is not available: PUT /v1/seat {\"state\": \"available\"} first")
        claim = await service.claim_next(session, principal, now=now, lease_s=600)
        if claim is None:
            return Response(status_code=204)
        task, reasons = await service.task_card(session, claim.task_id)
        lease = service.lease_for(task.tier)
        await session.execute(sql("UPDATE jobs SET lease_expires_at = :until WHERE id = :id"),
                              {"until": now + lease, "id": claim.job_id})
    return Claimed(task_id=task.id, tier=task.tier, phone=task.phone, fraud_type=task.fraud_type,
                   region_code=task.region_code, due_at=task.due_at, reasons=reasons, claim_expires_at=now + lease)


@router.post("/v1/tasks/{task_id}/call")
async def click_to_call(task_id: uuid.UUID, principal: OperatorKey, request: Request) -> dict[str, Any]:
    """Ring my seat's phone, then bridge it to the citizen."""
    state = request.app.state
    now = state.clock.now()
    async with transaction(state.sessionmaker) as session:
        claim = await service.my_claim(session, principal, task_id)
        if claim is None:
            raise HTTPException(409, NOT_CLAIMED)
        seat = await service.get_seat(session, principal)
        if seat is None or not seat.phone:
            raise HTTPException(409, "your seat has no phone: PUT /v1/seat {\"phone\": ...}")
        phone = (await session.execute(sql("SELECT phone FROM tasks WHERE id = :t"), {"t": task_id})).scalar_one()
        attempt_id = (await session.execute(
            sql("INSERT INTO call_attempts (task_id, channel, attempt, to_number, from_number, status,"
                " created_at, updated_at) VALUES (:t, 'operator_call', :a, :to, :from_, 'dialing', :now, :now)"
                " ON CONFLICT ON CONSTRAINT uq_call_attempts_task_channel_attempt"
                " DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id, call_sid"),
            {"t": task_id, "a": int(claim.payload.get("attempt", 0)), "to": phone,
             "from_": state.settings.from_number(), "now": now})).one()
        if attempt_id.call_sid:
            raise HTTPException(409, f"already calling ({attempt_id.call_sid}); record a disposition to finish")
        await session.execute(sql("UPDATE seats SET state = 'on_call', updated_at = :now WHERE key_id = :k"),
                              {"now": now, "k": principal.key_id})
    placer = state.placer
    call = await placer.client.calls.create_async(
        to=seat.phone, from_=state.settings.from_number(), method="POST",
        url=placer.url("/twilio/bridge", attempt_id.id), status_callback=placer.url("/twilio/status", attempt_id.id),
        status_callback_method="POST", status_callback_event=STATUS_EVENTS, timeout=30)
    async with transaction(state.sessionmaker) as session:
        await session.execute(sql("UPDATE call_attempts SET call_sid = :sid, status = 'placed' WHERE id = :id"),
                              {"sid": call.sid, "id": attempt_id.id})
    return {"call_sid": call.sid, "rings": seat.phone, "then_bridges_to": phone}


@router.post("/v1/tasks/{task_id}/disposition", status_code=202)
async def disposition(task_id: uuid.UUID, body: DispositionIn, principal: OperatorKey,
                      request: Request) -> dict[str, Any]:
    """Record what happened on the call; the dispatcher closes, escalates or reschedules the task."""
    now = request.app.state.clock.now()
    if body.disposition == "callback" and (body.callback_at is None or body.callback_at <= now):
        raise HTTPException(422, "callback_at: required for a callback, and in the future")
    async with transaction(request.app.state.sessionmaker) as session:
        claim = await service.my_claim(session, principal, task_id)
        if claim is None:
            raise HTTPException(409, NOT_CLAIMED)
        try:
            await service.record_disposition(session, principal, claim=claim, task_id=task_id,
                                             disposition=body.disposition, note=body.note,
                                             callback_at=body.callback_at, now=now)
        except LeaseLost:
            raise HTTPException(409, NOT_CLAIMED) from None
    return {"task_id": str(task_id), "disposition": body.disposition, "recorded": True}


@router.get("/v1/tasks")
async def list_my_tasks(principal: OperatorKey, request: Request, mine: bool = True) -> dict[str, Any]:
    """The tasks my seat holds now (mine=true; the unit's task list is the dispatcher's GET /v1/tasks)."""
    if not mine:
        raise HTTPException(422, "mine: only mine=true is served here; the dispatcher lists the unit's tasks")
    async with request.app.state.sessionmaker() as session:
        rows = await service.my_tasks(session, principal)
    return {"items": [{"task_id": str(r.id), "tier": r.tier, "status": r.status, "due_at": r.due_at,
                       "region_code": r.region_code, "fraud_type": r.fraud_type,
                       "claim_expires_at": r.lease_expires_at} for r in rows]}


@router.get("/v1/subjects/{phone}/history")
async def subject_history(phone: str, principal: OperatorKey, request: Request) -> dict[str, Any]:
    """A citizen's earlier warnings, calls and outcomes, within my unit only (404 otherwise)."""
    try:
        e164 = normalize_phone(phone)
    except InvalidPhone as exc:
        raise HTTPException(422, f"phone: {str(exc).removeprefix('phone ')}") from None
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
